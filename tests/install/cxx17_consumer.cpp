// A C++17 program using epx's public headers and libepx: the headers must not
// need C++20 (many trainers and extensions still build with C++17).
#if __cplusplus != 201703L
#error "this consumer must be compiled as C++17"
#endif
#include <cstdio>

#include <epx/epx.hpp>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rc = 0;
  {
    epx::Group group(MPI_COMM_WORLD);
    const epx::pipeline::Schedule s = epx::pipeline::make_schedule(epx::pipeline::ScheduleKind::one_f_one_b, {2, 4});
    const epx::pipeline::Op f = epx::pipeline::Op::forward(0, 0);
    if (!(f == epx::pipeline::Op::forward(0, 0)) || f != epx::pipeline::Op::forward(0, 0)) rc = 1;
    epx::Tensor t = epx::Tensor::zeros({3, 4}, epx::DType::f32);
    std::printf("cxx17 consumer: epx %s, rank %d/%d, %s, 1f1b on %d ranks x %d micro-batches: %s\n",
                EPX_VERSION_STRING, group.rank(), group.size(), t.describe().c_str(), s.ranks, s.microbatches,
                rc == 0 ? "OK" : "FAILED");
  }
  MPI_Finalize();
  return rc;
}
