// Builds and drops comm::Buffers in a loop, so that nearly every moment is
// inside a Buffer's set-up or tear-down, until the last rank kills itself
// with SIGKILL after the given number of milliseconds (mpirun then ends the
// others, also mid-set-up). run_kill_during_setup.sh checks what /dev/shm
// holds afterwards.
//
//   kill_during_setup DELAY_MS
#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <epx/comm.hpp>
#include <epx/group.hpp>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const int delay_ms = argc > 1 ? std::atoi(argv[1]) : 100;
  epx::Group group(MPI_COMM_WORLD);
  if (group.rank() == group.size() - 1) {
    std::thread([delay_ms] {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      kill(getpid(), SIGKILL);
    }).detach();
  }
  // 64 MiB of receive space per rank, reserved page by page: set-up is slow
  // enough that the kill lands inside one.
  for (int built = 0;; ++built) {
    epx::comm::Buffer buffer(group, {std::size_t{64} << 20, 30.0});
    if (group.rank() == 0 && built % 10 == 0)
      std::printf("buffers built: %d\n", built), std::fflush(stdout);
  }
}
