// Dispatch and combine in a loop across the emulated cluster's nodes until a
// fault: the victim rank SIGKILLs itself at a random moment of its calls
// (kill), or the harness cuts a node's link (link). Every rank that is left
// must raise within the timeout, naming a peer it lost, and writes its
// verdict to DIR/rank-R (its output could be lost with the link), then ends
// without MPI_Finalize (its peers are gone). mpirun's SIGTERM to the
// survivors after the kill is ignored, so that they show how they fail
// (run_peer_fault.sh gives them odls_base_sigkill_timeout for it).
//
//   peer_fault DIR kill VICTIM | peer_fault DIR link
#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include <epx/comm.hpp>
#include <epx/error.hpp>
#include <epx/group.hpp>
#include <epx/kernels.hpp>

namespace {

using Clock = std::chrono::steady_clock;

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path + ".tmp");
  out << text << "\n";
  out.close();
  std::rename((path + ".tmp").c_str(), path.c_str());  // whole or not at all
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: peer_fault DIR kill VICTIM | peer_fault DIR link\n");
    return 2;
  }
  const std::string dir = argv[1], mode = argv[2];
  const int victim = mode == "kill" && argc > 3 ? std::atoi(argv[3]) : -1;
  signal(SIGTERM, SIG_IGN);
  MPI_Init(&argc, &argv);
  epx::Group group(MPI_COMM_WORLD);
  const int R = group.size(), me = group.rank();
  const std::int64_t T = 64, H = 256;
  const int K = 4, E = 4 * R;
  epx::comm::Buffer buffer(group, {std::size_t{16} << 20, 0});  // EPX_TIMEOUT_S
  std::mt19937 rng(17 + me);
  std::normal_distribution<float> normal;
  epx::Tensor x = epx::Tensor::empty({T, H}, epx::DType::f32);
  epx::Tensor idx = epx::Tensor::empty({T, K}, epx::DType::i64);
  epx::Tensor w = epx::Tensor::empty({T, K}, epx::DType::f32);
  for (std::int64_t i = 0; i < T * H; ++i) x.data<float>()[i] = normal(rng);
  for (std::int64_t t = 0; t < T; ++t) {
    // K distinct experts: one on each of K consecutive ranks from a random
    // one (-1 past the ranks there are).
    const int first = static_cast<int>(rng() % static_cast<unsigned>(R));
    for (int k = 0; k < K; ++k) {
      idx.data<std::int64_t>()[t * K + k] =
          k < R ? ((first + k) % R) * 4 + static_cast<int>(rng() % 4) : -1;
      w.data<float>()[t * K + k] = 0.25f;
    }
  }
  Clock::time_point last_ok = Clock::now();
  for (long it = 0;; ++it) {
    if (it == 20) {
      if (me == 0) write_file(dir + "/running", "running");
      if (me == victim)  // dies within its next calls, wherever they are
        std::thread([] {
          std::this_thread::sleep_for(
              std::chrono::microseconds(200 + std::random_device{}() % 5000));
          kill(getpid(), SIGKILL);
        }).detach();
    }
    try {
      const epx::comm::Layout layout = buffer.get_dispatch_layout(idx, E);
      epx::comm::DispatchResult d = buffer.dispatch(x, idx, w, layout);
      const epx::Tensor back = buffer.combine(d.x, d.handle);
      last_ok = Clock::now();
    } catch (const epx::Error& e) {
      const double since = std::chrono::duration<double>(Clock::now() - last_ok).count();
      char head[160];
      std::snprintf(head, sizeof head, "rank %d raised %s after %.1f s, at iteration %ld: ", me,
                    epx::to_string(e.code()), since, it);
      write_file(dir + "/rank-" + std::to_string(me), head + std::string(e.what()));
      std::fflush(stdout);
      _exit(0);
    }
  }
}
