#include "launch/host_probe.hpp"

#include <sched.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

extern char** environ;

namespace epx::launch {

namespace {

bool read_int_file(const std::string& path, long long* out) {
  std::ifstream in(path);
  return static_cast<bool>(in >> *out);
}

// Whole CPUs granted by a cgroup CPU quota (v2 cpu.max or v1 cfs_quota_us), or
// INT_MAX when there is none. A quota below the core count means ranks that
// busy-poll are throttled as if the cores were fewer: it counts as fewer cores.
int cgroup_quota_cores() {
  std::ifstream v2("/sys/fs/cgroup/cpu.max");
  std::string quota;
  long long period = 0;
  if (v2 >> quota >> period) {
    if (quota == "max" || period <= 0) return INT_MAX;
    return static_cast<int>(std::max(1LL, std::atoll(quota.c_str()) / period));
  }
  for (const char* dir : {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"}) {
    long long q = 0;
    long long p = 0;
    if (read_int_file(std::string(dir) + "/cpu.cfs_quota_us", &q) &&
        read_int_file(std::string(dir) + "/cpu.cfs_period_us", &p)) {
      if (q <= 0 || p <= 0) return INT_MAX;
      return static_cast<int>(std::max(1LL, q / p));
    }
  }
  return INT_MAX;
}

// Read by the CMA probe; the child changes it after fork, so reading the new
// value proves the parent saw the child's memory and not its own copy.
volatile std::uint64_t g_cma_probe_word = 0x1111111111111111ull;
constexpr std::uint64_t kCmaChildValue = 0x5eed5eed5eed5eedull;

}  // namespace

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

int usable_physical_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? static_cast<int>(n) : 1;
  }
  // Open MPI counts cores, not hardware threads: two hyperthreads of one core
  // are one slot, and `--bind-to core` fails if we promise it more.
  std::set<std::pair<long long, long long>> cores;
  int cpus = 0;
  bool topology_known = true;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    ++cpus;
    const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    long long package = 0;
    long long core = 0;
    if (read_int_file(dir + "physical_package_id", &package) &&
        read_int_file(dir + "core_id", &core)) {
      cores.insert({package, core});
    } else {
      topology_known = false;
    }
  }
  int n = topology_known && !cores.empty() ? static_cast<int>(cores.size()) : cpus;
  n = std::min(n, cgroup_quota_cores());
  return std::max(n, 1);
}

bool cma_works() {
  int ready[2];
  int release[2];
  if (pipe(ready) != 0) return false;
  if (pipe(release) != 0) {
    close(ready[0]);
    close(ready[1]);
    return false;
  }
  const pid_t child = fork();
  if (child < 0) {
    for (int fd : {ready[0], ready[1], release[0], release[1]}) close(fd);
    return false;
  }
  if (child == 0) {
    // Like Open MPI's vader: allow any process of this user to read us (Yama).
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    g_cma_probe_word = kCmaChildValue;
    close(ready[0]);
    close(release[1]);
    char c = 1;
    (void)!write(ready[1], &c, 1);
    (void)!read(release[0], &c, 1);  // returns at EOF, when the parent is done
    _exit(0);
  }
  close(ready[1]);
  close(release[0]);
  char c = 0;
  bool ok = false;
  if (read(ready[0], &c, 1) == 1) {
    std::uint64_t value = 0;
    iovec local{&value, sizeof(value)};
    iovec remote{const_cast<std::uint64_t*>(&g_cma_probe_word), sizeof(value)};
    ok = process_vm_readv(child, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(sizeof(value)) &&
         value == kCmaChildValue;
  }
  close(ready[0]);
  close(release[1]);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return ok;
}

int hostfile_slots(const std::string& path, int local_cores) {
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  const std::string self = name;
  std::ifstream in(path);
  std::string line;
  int total = 0;
  while (std::getline(in, line)) {
    line = line.substr(0, line.find('#'));
    std::istringstream words(line);
    std::string host;
    if (!(words >> host)) continue;
    int slots = -1;
    for (std::string w; words >> w;) {
      if (w.rfind("slots=", 0) == 0) slots = std::atoi(w.c_str() + 6);
    }
    if (slots < 0) {
      const bool local = host == "localhost" || host == "127.0.0.1" || host == self ||
                         host == self.substr(0, self.find('.'));
      if (!local) return -1;
      slots = local_cores;
    }
    total += slots;
  }
  return total;
}

std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    // An empty PATH entry means the current directory.
    const std::string dir = end > start ? dirs.substr(start, end - start) : std::string(".");
    const std::string candidate = dir + "/" + name;
    if (is_executable_file(candidate)) return candidate;
    start = end + 1;
  }
  return "";
}

std::string resolve_program(const std::string& program, const std::string& fallback_dir) {
  if (program.find('/') != std::string::npos) {
    std::error_code ec;
    const std::string path = std::filesystem::absolute(program, ec).lexically_normal().string();
    return !ec && is_executable_file(path) ? path : "";
  }
  std::string path = find_on_path(program);
  if (path.empty() && !fallback_dir.empty() && is_executable_file(fallback_dir + "/" + program))
    path = fallback_dir + "/" + program;
  if (path.empty()) return "";
  std::error_code ec;
  const std::string abs = std::filesystem::absolute(path, ec).lexically_normal().string();
  return ec ? path : abs;
}

std::string self_directory() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string exe(buf, static_cast<std::size_t>(n));
  const std::size_t slash = exe.rfind('/');
  return slash == std::string::npos ? "" : exe.substr(0, slash);
}

HostFacts probe_host() {
  HostFacts facts;
  facts.usable_cores = usable_physical_cores();
  facts.is_root = geteuid() == 0;
  facts.cma_works = cma_works();
  facts.osc_chosen = std::getenv("OMPI_MCA_osc") != nullptr;
  facts.blas_threads_chosen =
      std::getenv("OPENBLAS_NUM_THREADS") != nullptr || std::getenv("OMP_NUM_THREADS") != nullptr;
  const char* job = std::getenv("SLURM_JOB_ID");
  facts.under_slurm = job != nullptr && *job != '\0';
  for (char** e = environ; e && *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq == nullptr || std::strncmp(*e, "EPX_", 4) != 0) continue;
    facts.epx_env.emplace_back(std::string(*e, static_cast<std::size_t>(eq - *e)),
                               std::string(eq + 1));
  }
  std::sort(facts.epx_env.begin(), facts.epx_env.end());
  return facts;
}

}  // namespace epx::launch
