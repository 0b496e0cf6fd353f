// epxrun: starts N ranks of a program with the mpirun (or srun) command line
// that works on this machine and prints that command. srun it becomes
// (execv); mpirun it runs as a child whose stderr loses the banners that only
// repeat a rank's non-zero exit (launch/mpirun_output.hpp), with signals
// forwarded and the child's exit status as epxrun's. See docs/epxrun.md.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "comm/transport/registry.hpp"
#include "core/config.hpp"
#include "launch/command.hpp"
#include "launch/host_probe.hpp"
#include "launch/mpirun_output.hpp"
#include "launch/options.hpp"

namespace {

using namespace epx::launch;

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int fail(int code, const std::string& message) {
  std::cerr << "epxrun: " << message << "\n";
  if (code == kExitUsage) std::cerr << "epxrun: run 'epxrun --help' for the options\n";
  return code;
}

// Prints the parameters as the ranks will read them. epxrun is a launcher,
// not the library: setting the variables in its own environment is how the
// registry sees -x and --ranks-per-node, and they reach the ranks anyway.
bool print_config(const LaunchOptions& o) {
  for (const auto& [name, value] : o.env_set) setenv(name.c_str(), value.c_str(), 1);
  if (o.ranks_per_node > 0)
    setenv("EPX_RANKS_PER_NODE", std::to_string(o.ranks_per_node).c_str(), 1);
  try {
    epx::core::print_params(std::cout);
    // What the parameters and the build choose between nodes (within a
    // node, shared memory carries the traffic).
    const auto choice = epx::comm::transport::internode_choice();
    std::cout << "inter-node transport: " << choice.name << " (" << choice.why << ")\n";
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << "epxrun: bad configuration: " << e.what() << "\n";
    return false;
  }
  std::cout.flush();
  return true;
}

Launcher pick_launcher(const LaunchOptions& o, const HostFacts& host) {
  if (o.launcher != Launcher::automatic) return o.launcher;
  // Inside a Slurm job srun knows the allocation; a job without srun (e.g. a
  // container started by one) still has mpirun.
  return host.under_slurm && !find_on_path("srun").empty() ? Launcher::srun : Launcher::mpirun;
}

}  // namespace

int main(int argc, char** argv) {
  LaunchOptions o;
  try {
    o = parse_options(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const UsageError& e) {
    return fail(kExitUsage, e.what());
  }
  if (o.help) {
    std::cout << usage_text();
    return 0;
  }
  if (o.print_config) {
    if (!print_config(o)) return kExitUsage;
    if (o.program.empty()) return 0;
  }

  const HostFacts host = probe_host();
  const Launcher launcher = pick_launcher(o, host);
  const std::string launcher_name = launcher == Launcher::srun ? "srun" : "mpirun";
  const std::string launcher_path = find_on_path(launcher_name);
  if (launcher_path.empty() && !o.dry_run) {
    return fail(kExitFailure,
                launcher_name + " not found on PATH (" + (getenv("PATH") ? getenv("PATH") : "") +
                    "); install Open MPI (apt-get install openmpi-bin, or bash scripts/setup.sh)");
  }

  const std::string self_dir = self_directory();
  const std::string program = resolve_program(o.program[0], self_dir);
  if (program.empty()) {
    if (o.program[0].find('/') != std::string::npos)
      return fail(kExitFailure, "program '" + o.program[0] + "' is not an executable file");
    return fail(kExitFailure,
                "program '" + o.program[0] + "' not found on PATH nor in " +
                    (self_dir.empty() ? std::string("epxrun's directory") : self_dir));
  }

  CommandInputs in;
  in.options = &o;
  in.host = &host;
  in.launcher = launcher;
  in.slots = host.usable_cores;
  if (!o.hostfile.empty()) {
    if (!std::ifstream(o.hostfile)) return fail(kExitUsage, "cannot read --hostfile " + o.hostfile);
    in.slots = hostfile_slots(o.hostfile, host.usable_cores);
  }
  in.program = o.program;
  in.program[0] = program;

  std::vector<std::string> cmd;
  try {
    cmd = build_command(in);
  } catch (const UsageError& e) {
    return fail(kExitUsage, e.what());
  }
  std::cerr << "epxrun: " << command_line(cmd) << std::endl;
  if (o.dry_run) return 0;

  std::vector<char*> cargv;
  for (std::string& word : cmd) cargv.push_back(word.data());
  cargv.push_back(nullptr);
  if (launcher == Launcher::mpirun) {
    const int status = run_filtered(launcher_path, cargv);
    if (status >= 0) return status;
  } else {
    execv(launcher_path.c_str(), cargv.data());
  }
  return fail(kExitFailure, "cannot run " + launcher_path + ": " + std::strerror(errno));
}
