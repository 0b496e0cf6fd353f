// epx-bench subcommands. Each benchmark registers a name, a one-line summary,
// its option text and a run function; main.cpp only looks them up.
#pragma once

#include <mpi.h>

#include <functional>
#include <string>
#include <vector>

namespace epx::bench {

struct Subcommand {
  std::string name;
  std::string summary;                 // one line, for `epx-bench --help`
  std::function<std::string()> usage;  // full option text, for `--help`
  // Runs on every rank of `comm`; returns the exit status. Throws UsageError
  // for bad options (identical on every rank), epx::Error for library errors.
  std::function<int(MPI_Comm comm, const std::vector<std::string>& args)> run;
};

class Registry {
 public:
  void add(Subcommand command);
  const Subcommand* find(const std::string& name) const;
  const std::vector<Subcommand>& all() const { return commands_; }

 private:
  std::vector<Subcommand> commands_;
};

// One registration function per benchmark file.
void register_dispatch_bench(Registry& registry);
void register_low_latency_bench(Registry& registry);
void register_eplb_bench(Registry& registry);
void register_pipeline_bench(Registry& registry);
void register_pipeline_run_bench(Registry& registry);
void register_serve_bench(Registry& registry);

}  // namespace epx::bench
