// Small helpers on an epx::comm::Buffer that more than one benchmark uses.
#pragma once

#include <epx/comm.hpp>
#include <string>

namespace epx::bench {

// The names of the transports `buffer` reaches its peers with, "+"-joined
// (this rank's own transport only when it is alone).
std::string transport_names(const comm::Buffer& buffer, int rank, int ranks);

// A copy of y in the buffer's receive space (Buffer::combine_input), where
// normal-mode combine reads the rows in place.
Tensor in_buffer(comm::Buffer& buffer, const comm::Handle& handle, const Tensor& y);

}  // namespace epx::bench
