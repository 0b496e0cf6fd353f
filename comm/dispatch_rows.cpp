#include "comm/dispatch_rows.hpp"

#include <cstring>

#include <epx/group.hpp>

#include "comm/buffer_impl.hpp"

namespace epx::comm {

std::vector<std::int64_t> receive_prefix(const std::vector<Message>& requests) {
  std::vector<std::int64_t> prefix(requests.size() + 1, 0);
  for (std::size_t s = 0; s < requests.size(); ++s)
    prefix[s + 1] = prefix[s] + requests[s].as<DispatchRequest>().rows;
  return prefix;
}

std::vector<Message> reply_messages(const Control& control,
                                    const std::vector<std::int64_t>& recv_prefix) {
  std::vector<Message> replies(recv_prefix.size() - 1, control.stamp());
  for (std::size_t s = 0; s < replies.size(); ++s) {
    DispatchReply& r = replies[s].as<DispatchReply>();
    r.first_row = recv_prefix[s];
    r.rows = recv_prefix.back();
  }
  return replies;
}

Target target_of(int peer, const Message& reply) {
  Target t;
  t.peer = peer;
  t.region = static_cast<transport::RegionId>(reply.block.region);
  t.offset = static_cast<std::size_t>(reply.block.offset);
  t.first_row = reply.as<DispatchReply>().first_row;
  t.rows = reply.as<DispatchReply>().rows;
  return t;
}

void write_rows(transport::Fabric& fabric, const Target& to, const Plan& p,
                const std::int32_t* rows, std::size_t n, const RowSource& src, int owner,
                const void* header, std::size_t header_bytes) {
  if (n == 0) return;
  PayloadLayout L(to.rows, p.row_bytes, p.num_scales, src.with_topk ? p.topk : 0);
  L.x += to.rows_at, L.scales += to.rows_at, L.topk_idx += to.rows_at, L.topk_weights += to.rows_at;
  const std::size_t first = static_cast<std::size_t>(to.first_row);
  RowWriter w(fabric, to.peer, to.region, to.offset);
  if (header_bytes) std::memcpy(w.section(0, header_bytes), header, header_bytes);
  std::byte* x = w.section(L.x + first * p.row_bytes, n * p.row_bytes);
  const std::size_t S = static_cast<std::size_t>(p.num_scales);
  float* scales = nullptr;
  if (S) scales = reinterpret_cast<float*>(w.section(L.scales + first * S * 4, n * S * 4));
  const std::size_t K = src.with_topk ? static_cast<std::size_t>(p.topk) : 0;
  std::int64_t* idx = nullptr;
  float* weights = nullptr;
  if (K) {
    idx = reinterpret_cast<std::int64_t*>(w.section(L.topk_idx + first * K * 8, n * K * 8));
    weights = reinterpret_cast<float*>(w.section(L.topk_weights + first * K * 4, n * K * 4));
  }
  const std::int64_t per_rank = K ? p.experts / fabric.group().size() : 0;
  const std::int64_t lo = owner >= 0 ? per_rank * owner : 0;
  const std::int64_t hi = owner >= 0 ? lo + per_rank : p.experts;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t t = static_cast<std::size_t>(rows[i]);
    std::memcpy(x + i * p.row_bytes, src.x + t * p.row_bytes, p.row_bytes);
    if (S) std::memcpy(scales + i * S, src.scales + t * S, S * sizeof(float));
    for (std::size_t k = 0; k < K; ++k) {
      const std::int64_t e = src.topk_idx[t * K + k];
      const bool keep = e >= lo && e < hi;
      idx[i * K + k] = keep ? e - lo : -1;
      weights[i * K + k] = keep ? src.topk_weights[t * K + k] : 0.0f;
    }
  }
  w.commit();
}

BatchLayout::BatchLayout(std::int64_t batch_rows, int per_node, const Plan& p)
    : header((sizeof(BatchHeaderEntry) * static_cast<std::size_t>(per_node) + 63) / 64 * 64),
      rows(batch_rows, p.row_bytes, p.num_scales, p.topk),
      total(header + rows.total) {}

}  // namespace epx::comm
