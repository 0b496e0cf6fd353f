#include "comm/low_latency.hpp"

#include "comm/payload.hpp"
#include "core/check.hpp"

namespace epx::comm {

namespace {
std::size_t align64(std::size_t n) { return (n + 63) / 64 * 64; }
}  // namespace

LowLatencyLayout::LowLatencyLayout(int m, std::int64_t h, int r, int e)
    : ranks(r), experts(e), local_experts(e / r), max_tokens(m), hidden(h) {
  num_scales = (h + kScaleBlock - 1) / kScaleBlock;
  mask_words = (local_experts + 63) / 64;
  const std::size_t slots = std::size_t(local_experts) * std::size_t(r) * std::size_t(m);
  const std::size_t recv = std::size_t(r) * std::size_t(m);
  // Rows are sized for f32 (the widest payload); FP8 and bf16 use the front.
  dispatch_rows = align64(slots * std::size_t(h) * 4);
  dispatch_scales = align64(slots * std::size_t(num_scales) * sizeof(float));
  recv_rows = align64(recv * std::size_t(h) * 4);
  recv_scales = align64(recv * std::size_t(num_scales) * sizeof(float));
  recv_masks = align64(recv * std::size_t(mask_words) * sizeof(std::uint64_t));
  headers = align64(std::size_t(r) * sizeof(std::int32_t));
  combine_rows = align64(std::size_t(e) * std::size_t(m) * std::size_t(h) * 4);
  half = dispatch_rows + dispatch_scales + recv_rows + recv_scales + recv_masks + headers +
         combine_rows;
  signals = 2 * half;
  total = signals + align64(2 * std::size_t(r) * sizeof(std::uint64_t));
}

std::size_t Buffer::low_latency_size_hint(int max_tokens_per_rank, int hidden, int num_ranks,
                                          int num_experts) {
  EPX_CHECK(max_tokens_per_rank > 0 && hidden > 0 && num_ranks > 0 && num_experts > 0 &&
                num_experts % num_ranks == 0,
            InvalidArgument, "low_latency_size_hint: max_tokens_per_rank = ", max_tokens_per_rank,
            ", hidden = ", hidden, ", num_ranks = ", num_ranks, ", num_experts = ", num_experts,
            ": expected positive values and num_experts a multiple of num_ranks");
  return LowLatencyLayout(max_tokens_per_rank, hidden, num_ranks, num_experts).total;
}

}  // namespace epx::comm
