// The row-writing step of the normal dispatch, shared by the flat path
// (dispatch.cpp) and the hierarchical one (forward.cpp): what is sent (Plan),
// where rows come from (RowSource) and where they go (Target).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <epx/tensor.hpp>

#include "comm/control.hpp"
#include "comm/payload.hpp"
#include "comm/transport/fabric.hpp"

namespace epx::comm {

// Everything a dispatch call needs to know about its inputs.
struct Plan {
  std::int64_t tokens = 0, hidden = 0, topk = 0;
  int experts = 0;
  DType wire = DType::bf16;      // payload dtype at the receiver
  bool quantize = false;         // cast x to e4m3 while sending
  bool ue8m0 = false;
  std::int64_t num_scales = 0;   // per row; 0 without FP8
  std::size_t row_bytes = 0;
  const std::byte* x = nullptr;
  const float* x_scales = nullptr;  // pass-through scales of an e4m3 x
  DType x_dtype = DType::bf16;
};

// Rows to send, indexed by row number: x in the wire dtype (quantize_once
// ran), scales when FP8, global top-k ids and weights. with_topk says whether
// the rows carry top-k (the normal dispatch) or not (the cached one); the
// pointers alone cannot say it, since an empty tensor may have a null pointer.
struct RowSource {
  const std::byte* x = nullptr;
  const float* scales = nullptr;
  const std::int64_t* topk_idx = nullptr;
  const float* topk_weights = nullptr;
  bool with_topk = false;
};

// A receiver's block of `rows` rows (PayloadLayout) at `offset` + `rows_at`
// of region `region` of rank `peer`; this sender's rows start at `first_row`.
// (rows_at > 0: a header precedes the rows, as in a batch.)
struct Target {
  int peer = 0;
  transport::RegionId region = -1;
  std::size_t offset = 0;
  std::int64_t first_row = 0;
  std::int64_t rows = 0;
  std::size_t rows_at = 0;
};

// Prefix sums [R+1] of the rows each sender announced: the receiver's block
// holds sender s's rows at [prefix[s], prefix[s+1]).
std::vector<std::int64_t> receive_prefix(const std::vector<Message>& requests);

// The target a reply message describes.
Target target_of(int peer, const Message& reply);
// One reply per sender: its first row (recv_prefix) and the block's rows.
std::vector<Message> reply_messages(const Control& control,
                                    const std::vector<std::int64_t>& recv_prefix);

// Writes rows[0..n) of `src` to rows first_row.. of the target. With
// `owner` >= 0 the top-k ids become that rank's local expert ids (-1 and
// weight 0 elsewhere), as the receiver wants them; with -1 they stay global
// (a batch for a forwarder, which routes by them). `header_bytes` of `header`
// go to `offset` first, in the same writer. The puts complete with the next
// signal to the peer (payload.hpp).
void write_rows(transport::Fabric& fabric, const Target& to, const Plan& p,
                const std::int32_t* rows, std::size_t n, const RowSource& src, int owner,
                const void* header = nullptr, std::size_t header_bytes = 0);

// A batch: the rows one rank sends to a remote node, in token order, to the
// rank of the same local index there. A header first: for every rank of
// that node, where this sender's rows go in its block (the forwarder writes
// them there).
struct BatchHeaderEntry {
  std::int64_t region, offset, first_row, rows;
};
struct BatchLayout {
  std::size_t header = 0;  // bytes of the header (aligned)
  PayloadLayout rows;      // after the header
  std::size_t total = 0;
  BatchLayout(std::int64_t batch_rows, int per_node, const Plan& p);
};

}  // namespace epx::comm
