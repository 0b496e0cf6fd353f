// Agreement among the ranks of a communicator on whether any of them failed,
// with a non-blocking collective polled against a deadline (a blocking one
// could wait forever for a rank that is gone).
#pragma once

#include <mpi.h>

#include <functional>
#include <string>

#include <epx/error.hpp>

#include "core/wait.hpp"

namespace epx::core {

// Collective. Waits (with back-off) for MPI_Iallreduce of `value` with `op`
// on `comm` until `deadline`; throws Timeout naming `what` if it passes.
// `poll`, when given, runs on every round of the wait (to drive progress or
// to give up early by throwing); the request then stays pending, as after a
// timeout.
int allreduce_int(MPI_Comm comm, int value, MPI_Op op, const Deadline& deadline, const char* what,
                  const std::function<void()>& poll = {});

// Collective. If any rank's `own_error` is not empty, every rank throws:
// that rank its own message, the others one naming it; both with `code`.
void agree_on_error(MPI_Comm comm, const std::string& own_error, ErrorCode code,
                    const Deadline& deadline, const char* what);

}  // namespace epx::core
