// epx-bench: benchmarks of epx, each a subcommand that registers itself in
// registry.hpp. Run under epxrun: `epxrun -n 4 -- epx-bench dispatch`.
#include <mpi.h>

#include <algorithm>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "benchmarks/collective.hpp"
#include "benchmarks/options.hpp"
#include "benchmarks/registry.hpp"

namespace {

using namespace epx::bench;

void print_commands(const Registry& registry, std::ostream& os) {
  os << "usage: epxrun -n N -- epx-bench COMMAND [options]\n"
     << "       epx-bench COMMAND --help\n\ncommands:\n";
  for (const Subcommand& c : registry.all()) {
    std::string name = "  " + c.name;
    name.resize(std::max<std::size_t>(name.size() + 2, 14), ' ');
    os << name << c.summary << "\n";
  }
}

bool wants_help(const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  Registry registry;
  register_dispatch_bench(registry);
  register_low_latency_bench(registry);
  register_eplb_bench(registry);
  register_pipeline_bench(registry);
  register_pipeline_run_bench(registry);
  register_serve_bench(registry);

  // Help needs no MPI, so it also works outside mpirun.
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    print_commands(registry, args.empty() ? std::cerr : std::cout);
    return args.empty() ? 2 : 0;
  }
  const Subcommand* command = registry.find(args[0]);
  if (command == nullptr) {
    std::cerr << "epx-bench: unknown command '" << args[0] << "'\n";
    print_commands(registry, std::cerr);
    return 2;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (wants_help(rest)) {
    std::cout << command->usage();
    return 0;
  }

  MPI_Init(&argc, &argv);
  int status = 0;
  try {
    status = command->run(MPI_COMM_WORLD, rest);
  } catch (const UsageError& e) {
    // Every rank parsed the same words and failed alike; one message is enough.
    if (comm_rank(MPI_COMM_WORLD) == 0)
      std::cerr << e.what() << "\n(run 'epx-bench " << command->name << " --help')\n";
    status = 2;
  } catch (const CheckFailed& e) {
    if (comm_rank(MPI_COMM_WORLD) == 0) std::cerr << "epx-bench: FAILED: " << e.what() << "\n";
    status = 1;
  } catch (const std::exception& e) {
    abort_all(MPI_COMM_WORLD, e.what());
  }
  MPI_Finalize();
  return status;
}
