// Uses the public API only: a dispatch and a combine of random tokens on
// every rank; combine of the unchanged rows must give each token back times
// the number of ranks it visited.
#include <cstdio>
#include <random>

#include <epx/epx.hpp>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int failed = 0;
  try {
    epx::Group group(MPI_COMM_WORLD);
    epx::comm::Buffer buffer(group, {std::size_t{1} << 20, 60});
    const std::int64_t T = 10 + group.rank(), H = 128, K = 2;
    const int E = 2 * group.size();
    epx::Tensor x = epx::Tensor::empty({T, H}, epx::DType::f32);
    epx::Tensor idx = epx::Tensor::empty({T, K}, epx::DType::i64);
    epx::Tensor w = epx::Tensor::empty({T, K}, epx::DType::f32);
    std::mt19937 rng(group.rank());
    for (std::int64_t i = 0; i < T * H; ++i) x.data<float>()[i] = float(rng() % 1000) / 8.0f;
    for (std::int64_t t = 0; t < T; ++t) {
      idx.data<std::int64_t>()[t * K] = t % E;
      idx.data<std::int64_t>()[t * K + 1] = (t + 1) % E;
      w.data<float>()[t * K] = w.data<float>()[t * K + 1] = 0.5f;
    }
    epx::comm::Layout layout = buffer.get_dispatch_layout(idx, E);
    epx::comm::DispatchResult d = buffer.dispatch(x, idx, w, layout);
    epx::Tensor y = buffer.combine(d.x, d.handle);
    const bool* in_rank = layout.is_token_in_rank.data<bool>();
    for (std::int64_t t = 0; t < T && !failed; ++t) {
      int visits = 0;
      for (int r = 0; r < group.size(); ++r) visits += in_rank[t * group.size() + r];
      for (std::int64_t h = 0; h < H; ++h)
        if (y.data<float>()[t * H + h] != x.data<float>()[t * H + h] * float(visits)) failed = 1;
    }
  } catch (const epx::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    failed = 1;
  }
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  if (any == 0) std::printf("epx_consumer: OK\n");
  return any;
}
