// What epxrun needs to know about the machine it launches from: how many
// cores the ranks may really use, who runs it, whether Open MPI's single-copy
// shared-memory path (Linux CMA) works here, and where programs live.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace epx::launch {

struct HostFacts {
  int usable_cores = 1;      // physical cores in our affinity mask, capped by a cgroup CPU quota
  bool is_root = false;      // effective uid 0
  bool cma_works = true;     // process_vm_readv between two processes succeeds
  bool under_slurm = false;  // SLURM_JOB_ID is set
  bool osc_chosen = false;   // OMPI_MCA_osc is set: the user picked Open MPI's one-sided component
  bool blas_threads_chosen = false;  // OPENBLAS_NUM_THREADS or OMP_NUM_THREADS is set
  std::vector<std::pair<std::string, std::string>> epx_env;  // EPX_* variables, sorted by name
};

HostFacts probe_host();

// Physical cores (distinct package/core pairs) among the CPUs this process may run on.
int usable_physical_cores();

// Whether one process can read another's memory with process_vm_readv, which
// Open MPI's vader BTL uses for large messages. Container seccomp profiles and
// Yama often forbid it; vader then fails at the first large message.
bool cma_works();

// Total slots of an Open MPI hostfile ("host slots=N" lines). A line without
// slots= means that host's core count to Open MPI: `local_cores` for this host
// (localhost or our hostname); for another host it is unknown and gives -1.
int hostfile_slots(const std::string& path, int local_cores);

// A regular file we may execute.
bool is_executable_file(const std::string& path);

// `name` found as an executable file in the directories of PATH, or "".
std::string find_on_path(const std::string& name);

// PROGRAM as an absolute path, or "" when it is not an executable file. With a
// '/' it is taken relative to the current directory; a bare name is searched
// on PATH, then in `fallback_dir` (epxrun's own directory, where the build
// puts the programs that come with epx).
std::string resolve_program(const std::string& program, const std::string& fallback_dir);

// The directory holding the running executable (from /proc/self/exe).
std::string self_directory();

}  // namespace epx::launch
