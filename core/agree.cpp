#include "core/agree.hpp"

#include "core/check.hpp"

namespace epx::core {

int allreduce_int(MPI_Comm comm, int value, MPI_Op op, const Deadline& deadline, const char* what,
                  const std::function<void()>& poll) {
  int result = 0;
  MPI_Request request;
  MPI_Iallreduce(&value, &result, 1, MPI_INT, op, comm, &request);
  Backoff backoff;
  for (;;) {
    int done = 0;
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return result;
    // The request stays pending: the communicator is unusable afterwards,
    // which is what a timeout means for the object that owns it.
    EPX_CHECK(!deadline.expired(), Timeout, what, ": timed out after ", deadline.seconds(),
              " s waiting for every rank (a rank did not make the same call)");
    if (poll) poll();
    backoff.pause();
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
