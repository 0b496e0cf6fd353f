#include "launch/command.hpp"

#include <set>

namespace epx::launch {

namespace {

// Environment for the ranks, in the order it is given: --ranks-per-node, then
// every EPX_* of our environment that no option overrides, then -x NAME, then
// -x NAME=VALUE. `set` entries carry a value, `forward` entries do not.
struct RankEnv {
  std::vector<std::pair<std::string, std::string>> set;
  std::vector<std::string> forward;
};

RankEnv rank_env(const LaunchOptions& o, const HostFacts& h) {
  RankEnv env;
  std::set<std::string> named;
  if (o.ranks_per_node > 0) {
    env.set.emplace_back("EPX_RANKS_PER_NODE", std::to_string(o.ranks_per_node));
    named.insert("EPX_RANKS_PER_NODE");
  }
  for (const auto& kv : o.env_set) named.insert(kv.first);
  for (const std::string& name : o.env_forward) named.insert(name);
  for (const auto& kv : h.epx_env) {
    if (!named.count(kv.first)) env.forward.push_back(kv.first);
  }
  std::set<std::string> forwarded;
  for (const std::string& name : o.env_forward) {
    if (forwarded.insert(name).second) env.forward.push_back(name);
  }
  for (const auto& kv : o.env_set) env.set.push_back(kv);
  if (!h.cma_works && !h.osc_chosen && !named.count("OMPI_MCA_osc")) {
    // Without CMA, Open MPI's default one-sided component cannot create the
    // windows epx's mpi transport uses between nodes; osc/pt2pt (one-sided
    // over the point-to-point transports) works everywhere.
    env.set.emplace_back("OMPI_MCA_osc", "pt2pt");
  }
  if (!h.blas_threads_chosen && !named.count("OPENBLAS_NUM_THREADS") && !named.count("OMP_NUM_THREADS")) {
    // One BLAS thread per rank unless asked (as torchrun sets OMP_NUM_THREADS=1):
    // OpenBLAS otherwise starts a thread per core in every rank at load, and
    // those threads spin against the ranks for the cores. A program that wants
    // more (epx-train's `threads:`) raises the count itself.
    env.set.emplace_back("OPENBLAS_NUM_THREADS", "1");
    env.set.emplace_back("OMP_NUM_THREADS", "1");
  }
  return env;
}

std::vector<std::string> mpirun_command(const CommandInputs& in) {
  const LaunchOptions& o = *in.options;
  const HostFacts& h = *in.host;
  std::vector<std::string> argv{"mpirun", "-n", std::to_string(o.num_ranks)};
  // Open MPI refuses root unless told; containers and CI usually run as root.
  if (h.is_root) argv.push_back("--allow-run-as-root");
  if (!o.hostfile.empty()) {
    argv.push_back("--hostfile");
    argv.push_back(o.hostfile);
  }
  if (in.slots >= 0 && o.num_ranks > in.slots) {
    // More ranks than cores: mpirun would refuse without --oversubscribe, a
    // rank bound to a shared core cannot move off it, and a rank that spins in
    // an MPI wait steals the core from the rank it waits for.
    for (const char* a :
         {"--oversubscribe", "--bind-to", "none", "--mca", "mpi_yield_when_idle", "1"})
      argv.push_back(a);
  } else if (o.hostfile.empty()) {
    // The ranks fit this host's cores: one core each, so no rank migrates.
    // With a hostfile the slots say nothing about each host's cores, and an
    // explicit binding that cannot be met is an error; Open MPI's default
    // binding then backs off by itself.
    for (const char* a : {"--map-by", "core", "--bind-to", "core"}) argv.push_back(a);
  }
  if (!h.cma_works) {
    // vader's default single-copy path is CMA (process_vm_readv); where it is
    // forbidden every large message fails, so use copy-in/copy-out instead.
    for (const char* a : {"--mca", "btl_vader_single_copy_mechanism", "none"}) argv.push_back(a);
  }
  const RankEnv env = rank_env(o, h);
  for (const std::string& name : env.forward) {
    argv.push_back("-x");
    argv.push_back(name);
  }
  for (const auto& [name, value] : env.set) {
    argv.push_back("-x");
    argv.push_back(name + "=" + value);
  }
  argv.insert(argv.end(), in.program.begin(), in.program.end());
  return argv;
}

std::vector<std::string> srun_command(const CommandInputs& in) {
  const LaunchOptions& o = *in.options;
  if (!o.hostfile.empty()) {
    throw UsageError("--hostfile " + o.hostfile +
                     " cannot be used with srun: the Slurm allocation decides the hosts "
                     "(use --launcher mpirun to use a hostfile)");
  }
  std::vector<std::string> argv{"srun", "-n", std::to_string(o.num_ranks)};
  // ALL passes our whole environment, EPX_* and -x NAME included; only values
  // that differ from it need naming.
  std::string exports = "--export=ALL";
  RankEnv env = rank_env(o, *in.host);
  if (!in.host->cma_works) env.set.emplace_back("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
  for (const auto& [name, value] : env.set) {
    if (value.find(',') != std::string::npos) {
      throw UsageError("bad -x value '" + name + "=" + value +
                       "': srun --export cannot carry a value with ','");
    }
    exports += "," + name + "=" + value;
  }
  argv.push_back(exports);
  argv.insert(argv.end(), in.program.begin(), in.program.end());
  return argv;
}

std::string quote(const std::string& word) {
  if (word.empty()) return "''";
  bool plain = true;
  for (char c : word) {
    const bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      std::string("-_./=:,+@%").find(c) != std::string::npos;
    plain = plain && safe;
  }
  if (plain) return word;
  std::string out = "'";
  for (char c : word) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

}  // namespace

std::vector<std::string> build_command(const CommandInputs& in) {
  return in.launcher == Launcher::srun ? srun_command(in) : mpirun_command(in);
}

std::string command_line(const std::vector<std::string>& argv) {
  std::string line;
  for (const std::string& word : argv) {
    if (!line.empty()) line += ' ';
    line += quote(word);
  }
  return line;
}

}  // namespace epx::launch
