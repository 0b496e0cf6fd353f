#include "core/agree.hpp"

#include <memory>

#include "core/check.hpp"

namespace epx::core {

int allreduce_int(MPI_Comm comm, int value, MPI_Op op, const Deadline& deadline, const char* what,
                  const std::function<void()>& poll) {
  // MPI reads `value` and writes `result` whenever the other ranks come,
  // which may be after this call gave up: a collective cannot be cancelled.
  // So they live on the heap, and an abandoned pair is leaked (8 bytes)
  // rather than left pointing into a stack frame that is gone.
  struct Operands {
    int value = 0, result = 0;
  };
  auto operands = std::make_unique<Operands>();
  operands->value = value;
  MPI_Request request;
  MPI_Iallreduce(&operands->value, &operands->result, 1, MPI_INT, op, comm, &request);
  Backoff backoff;
  try {
    for (;;) {
      int done = 0;
      MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      if (done) return operands->result;
      // The request stays pending: the communicator is unusable afterwards,
      // which is what a timeout means for the object that owns it.
      EPX_CHECK(!deadline.expired(), Timeout, what, ": timed out after ", deadline.seconds(),
                " s waiting for every rank (a rank did not make the same call)");
      if (poll) poll();
      backoff.pause();
    }
  } catch (...) {
    static_cast<void>(operands.release());  // leaked on purpose: MPI may still use it
    throw;
  }
}

void agree_on_error(MPI_Comm comm, const std::string& own_error, ErrorCode code,
                    const Deadline& deadline, const char* what) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  const int failed = allreduce_int(comm, own_error.empty() ? -1 : rank, MPI_MAX, deadline, what);
  if (!own_error.empty()) throw Error(code, own_error);
  if (failed >= 0) raise(code, concat(what, ": rank ", failed, " failed (see its error)"), __FILE__, __LINE__);
}

}  // namespace epx::core
