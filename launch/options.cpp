#include "launch/options.hpp"

#include <cctype>
#include <cerrno>
#include <cstdlib>

namespace epx::launch {

namespace {

// A whole number in [lo, hi], or a UsageError naming the option and the text.
int parse_count(const std::string& option, const std::string& text, int lo, int hi,
                const char* meaning) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || errno != 0 || *end != '\0' || v < lo || v > hi) {
    throw UsageError("bad " + option + " value '" + text + "': expected " + meaning + " from " +
                     std::to_string(lo) + " to " + std::to_string(hi));
  }
  return static_cast<int>(v);
}

bool is_env_name(const std::string& s) {
  if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  }
  return true;
}

void add_env(LaunchOptions& o, const std::string& spec) {
  const std::size_t eq = spec.find('=');
  const std::string name = spec.substr(0, eq);
  if (!is_env_name(name)) {
    throw UsageError("bad -x value '" + spec +
                     "': expected NAME=VALUE or NAME, with NAME a variable name");
  }
  if (eq == std::string::npos)
    o.env_forward.push_back(name);
  else
    o.env_set.emplace_back(name, spec.substr(eq + 1));
}

constexpr int kMaxRanks = 1 << 20;

}  // namespace

LaunchOptions parse_options(const std::vector<std::string>& args) {
  LaunchOptions o;
  bool saw_separator = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    if (arg == "--") {
      saw_separator = true;
      o.program.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
      break;
    }
    // "--name=value" is the same as "--name value".
    std::string inline_value;
    bool has_inline = false;
    if (arg.rfind("--", 0) == 0) {
      const std::size_t eq = arg.find('=');
      if (eq != std::string::npos) {
        inline_value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
        has_inline = true;
      }
    } else if (arg.rfind("-n", 0) == 0 && arg.size() > 2 && arg != "-np") {
      inline_value = arg.substr(2);  // "-n4"
      arg = "-n";
      has_inline = true;
    }
    auto value = [&]() -> std::string {
      if (has_inline) return inline_value;
      if (i + 1 >= args.size()) throw UsageError("option " + arg + " needs a value");
      return args[++i];
    };
    auto no_value = [&]() {
      if (has_inline)
        throw UsageError("option " + arg + " takes no value (got '" + inline_value + "')");
    };

    if (arg == "-h" || arg == "--help") {
      no_value();
      o.help = true;
    } else if (arg == "-n" || arg == "-np" || arg == "--np") {
      o.num_ranks = parse_count("-n", value(), 1, kMaxRanks, "a number of ranks");
    } else if (arg == "--ranks-per-node") {
      o.ranks_per_node = parse_count("--ranks-per-node", value(), 1, kMaxRanks, "ranks per node");
    } else if (arg == "--hostfile") {
      o.hostfile = value();
      if (o.hostfile.empty()) throw UsageError("bad --hostfile value '': expected a file name");
    } else if (arg == "-x") {
      add_env(o, value());
    } else if (arg == "--launcher") {
      const std::string v = value();
      if (v == "auto")
        o.launcher = Launcher::automatic;
      else if (v == "mpirun")
        o.launcher = Launcher::mpirun;
      else if (v == "srun")
        o.launcher = Launcher::srun;
      else
        throw UsageError("bad --launcher value '" + v + "': expected auto, mpirun or srun");
    } else if (arg == "--dry-run") {
      no_value();
      o.dry_run = true;
    } else if (arg == "--print-config") {
      no_value();
      o.print_config = true;
    } else if (!arg.empty() && arg[0] == '-') {
      throw UsageError("unknown option '" + args[i] + "'");
    } else {
      throw UsageError("unexpected argument '" + arg +
                       "' before '--': the program goes after '--', as in "
                       "epxrun -n 4 -- " +
                       arg);
    }
  }
  if (o.help) return o;

  for (const auto& [name, v] : o.env_set) {
    if (name == "EPX_RANKS_PER_NODE" && o.ranks_per_node > 0) {
      throw UsageError("--ranks-per-node " + std::to_string(o.ranks_per_node) +
                       " conflicts with -x EPX_RANKS_PER_NODE=" + v + ": give one of them");
    }
  }
  if (!saw_separator) {
    if (o.print_config) return o;  // only print the configuration
    throw UsageError("missing '-- PROGRAM': epxrun -n N [options] -- PROGRAM [ARGS...]");
  }
  if (o.program.empty() || o.program[0].empty()) {
    throw UsageError("no program after '--': epxrun -n N [options] -- PROGRAM [ARGS...]");
  }
  if (o.num_ranks == 0) throw UsageError("missing -n N: how many ranks to start");
  if (o.ranks_per_node > o.num_ranks) {
    throw UsageError("bad --ranks-per-node value '" + std::to_string(o.ranks_per_node) +
                     "': more than the " + std::to_string(o.num_ranks) + " ranks of -n");
  }
  // epx needs nodes of one size (the hierarchical path pairs ranks of the same
  // local index): refused here, not later inside every rank of the program.
  int rpn = o.ranks_per_node;
  std::string rpn_from = "--ranks-per-node";
  for (const auto& [name, v] : o.env_set) {
    if (name == "EPX_RANKS_PER_NODE") {
      rpn = parse_count("-x EPX_RANKS_PER_NODE", v, 0, kMaxRanks, "ranks per node (0: hosts)");
      rpn_from = "-x EPX_RANKS_PER_NODE";
    }
  }
  if (rpn > 0 && o.num_ranks % rpn != 0) {
    throw UsageError("bad " + rpn_from + " value '" + std::to_string(rpn) + "': the " +
                     std::to_string(o.num_ranks) + " ranks of -n do not split into nodes of " +
                     std::to_string(rpn) + "; every node needs the same number of ranks (give a "
                     "divisor of " + std::to_string(o.num_ranks) + ")");
  }
  return o;
}

std::string usage_text() {
  return R"(usage: epxrun -n N [options] -- PROGRAM [ARGS...]

Starts N ranks of PROGRAM with mpirun (or srun inside a Slurm job) and the
flags that make that work on this machine. The command is printed to stderr
("epxrun: ..."), then run; its exit status is epxrun's.

options:
  -n, -np, --np N       number of ranks (required with a program)
  --ranks-per-node n    split the ranks into virtual nodes of n consecutive ranks
                        (exports EPX_RANKS_PER_NODE=n), so inter-node paths run on
                        one host; n must divide N
  --hostfile F          Open MPI hostfile ("host slots=K" lines) for runs over
                        several hosts; not used under Slurm
  -x NAME=VALUE         set NAME in every rank's environment (repeatable)
  -x NAME               pass this process's value of NAME to every rank
  --launcher L          auto (default: srun when SLURM_JOB_ID is set, else
                        mpirun), mpirun or srun
  --dry-run             print the command but do not run it
  --print-config        print every EPX_* parameter with the value the ranks will
                        see (environment, -x and --ranks-per-node applied), and the
                        transport chosen between nodes; without '-- PROGRAM'
                        nothing is launched
  -h, --help            this text

what epxrun adds to mpirun:
  --allow-run-as-root   when run as root (containers)
  --oversubscribe, --bind-to none, --mca mpi_yield_when_idle 1
                        when N exceeds the usable cores (physical cores in the
                        CPU affinity mask, capped by a cgroup CPU quota), or the
                        hostfile's slots: ranks share cores and must yield while
                        they wait
  --map-by core --bind-to core
                        when the ranks fit the cores (and no hostfile is given):
                        one core per rank
  --mca btl_vader_single_copy_mechanism none
                        when this machine forbids process_vm_readv (common in
                        containers), which Open MPI's shared-memory path needs;
                        then also -x OMPI_MCA_osc=pt2pt (unless OMPI_MCA_osc is
                        set), since the default one-sided component cannot
                        create the windows epx uses between nodes without it
  -x EPX_...            every EPX_* variable of the environment is forwarded
PROGRAM is made absolute; a bare name not found on PATH is looked up next to
epxrun itself, so "epxrun -n 4 -- epx-bench dispatch" works from build/bin.
Under Slurm: srun -n N --export=ALL[,NAME=VALUE...] PROGRAM ARGS.

exit status: PROGRAM's (through mpirun/srun); 2 for a usage error; 1 when the
launcher or the program cannot be found.

examples:
  epxrun -n 4 -- epx-bench dispatch --fp8
  epxrun -n 8 --ranks-per-node 4 -- ./my_app
  epxrun -n 4 -x EPX_LOG_LEVEL=INFO --dry-run -- ./my_app
  epxrun --print-config -x EPX_TIMEOUT_S=60
)";
}

}  // namespace epx::launch
