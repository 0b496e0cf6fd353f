// What the two combine paths share: the checked call (combine.cpp), the
// request-round fields (CombineRequest, control_messages.hpp), the agreement
// check and the result's allocation.
// The flat path is in combine.cpp, the hierarchical one in combine_hier.cpp.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "comm/buffer_impl.hpp"
#include "comm/handle.hpp"

namespace epx::comm {

struct CombineCall {
  explicit CombineCall(const Tensor& y_) : y(y_) {}
  const Tensor& y;
  const detail::HandleState* h = nullptr;  // null when this rank's input is bad
  std::int64_t hidden = 0;
  std::size_t row_bytes = 0;
  DType partial_dtype = DType::f32;  // of the partial sums that cross nodes
  std::string err;                   // this rank's verdict on its input
  std::optional<Arena::Location> y_home;  // y in this buffer's receive space
  bool ok() const { return err.empty(); }
};

// The fields of the request to `peer` that both paths fill: the call's
// (compared by check_same_call) and where this rank's y is, for a peer that
// reads it in place.
void fill_call_fields(Message& m, const CombineCall& c, const transport::Fabric& fabric, int peer);

// Reading in place, from `peer`'s request `in`: this rank reads the peer's y
// (it is in the peer's receive space and this rank can load from there), or
// the peer reads this rank's y.
bool reads_peer_y(const transport::Fabric& fabric, const Message& in, int peer);
bool peer_reads_y(const CombineCall& c, const Message& in);
// Where `peer`'s y starts, mapped here (reads_peer_y must hold).
const std::byte* peer_y(transport::Fabric& fabric, const Message& in, int peer);
// Throws AgreedError on every rank when ranks pass different y or handles.
void check_same_call(const std::vector<Message>& in, const CombineCall& c);
// [T, hidden] in y's dtype, in the receive space when it fits (its pages are
// mapped and touched already: a fresh allocation faults in every page).
Tensor allocate_result(Buffer::Impl& I, const CombineCall& c);

Tensor combine_flat(Buffer::Impl& I, const CombineCall& c, const core::Deadline& deadline);
Tensor combine_hierarchical(Buffer::Impl& I, const CombineCall& c, const core::Deadline& deadline);

}  // namespace epx::comm
