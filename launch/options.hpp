// epxrun's command line: parsing and the --help text. Parsing is pure (no
// environment, no files) so that every rule is easy to check.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace epx::launch {

enum class Launcher { automatic, mpirun, srun };

struct LaunchOptions {
  int num_ranks = 0;       // -n
  int ranks_per_node = 0;  // --ranks-per-node (0: not given)
  std::string hostfile;    // --hostfile
  Launcher launcher = Launcher::automatic;
  bool dry_run = false;
  bool print_config = false;
  bool help = false;
  // -x NAME=VALUE (set) and -x NAME (forward this process's value), in order.
  std::vector<std::pair<std::string, std::string>> env_set;
  std::vector<std::string> env_forward;
  std::vector<std::string> program;  // PROGRAM ARGS, everything after "--"
};

// A mistake on the command line: epxrun prints it with a hint and exits 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// args: argv[1..]. Throws UsageError naming the option and the value.
LaunchOptions parse_options(const std::vector<std::string>& args);

std::string usage_text();

}  // namespace epx::launch
