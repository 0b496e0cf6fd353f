// Turns epxrun's options and the facts about this machine into the launcher's
// argv. Pure: no environment, no files, so each rule can be checked alone.
#pragma once

#include <string>
#include <vector>

#include "launch/host_probe.hpp"
#include "launch/options.hpp"

namespace epx::launch {

struct CommandInputs {
  const LaunchOptions* options = nullptr;
  const HostFacts* host = nullptr;
  Launcher launcher = Launcher::mpirun;  // resolved: mpirun or srun, never automatic
  // Slots the ranks may fill without sharing a core: the usable cores here, or
  // the hostfile's total; -1 when unknown (a hostfile line without slots=).
  int slots = 1;
  std::vector<std::string> program;  // resolved PROGRAM path, then ARGS
};

// argv[0] is the launcher's name ("mpirun" or "srun"). Throws UsageError when
// the options cannot be expressed with that launcher.
std::vector<std::string> build_command(const CommandInputs& in);

// One shell-readable line: words quoted only where the shell needs it.
std::string command_line(const std::vector<std::string>& argv);

}  // namespace epx::launch
