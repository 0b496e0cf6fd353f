// gtest main for multi-rank suites: every rank runs every test; rank 0
// prints the usual report, other ranks print only their failures; the exit
// code is non-zero on every rank if any rank failed.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <epx/config.hpp>

#include <gtest/gtest.h>

namespace {

class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                   r.line_number(), r.summary());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  // An entry that selects a transport this build lacks is skipped (ctest's
  // SKIP_RETURN_CODE), on every rank alike.
  const char* internode = std::getenv("EPX_INTERNODE_TRANSPORT");
  if (!EPX_HAVE_UCX && internode && std::string(internode) == "ucx") {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) std::printf("skipped: EPX_INTERNODE_TRANSPORT=ucx, and this build has no UCX\n");
    MPI_Finalize();
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(rank));
  }
  int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
