#include "comm/payload.hpp"

namespace epx::comm {

namespace {
std::size_t align64(std::size_t n) { return (n + 63) / 64 * 64; }

}  // namespace

PayloadLayout::PayloadLayout(std::int64_t rows, std::size_t rb, std::int64_t ns, std::int64_t k)
    : row_bytes(rb), num_scales(ns), topk(k) {
  const std::size_t m = static_cast<std::size_t>(rows);
  x = 0;
  scales = align64(x + m * row_bytes);
  topk_idx = align64(scales + m * static_cast<std::size_t>(ns) * sizeof(float));
  topk_weights = align64(topk_idx + m * static_cast<std::size_t>(k) * sizeof(std::int64_t));
  total = align64(topk_weights + m * static_cast<std::size_t>(k) * sizeof(float));
}

RowWriter::RowWriter(transport::Fabric& fabric, int peer, transport::RegionId region,
                     std::size_t block_offset)
    : fabric_(fabric),
      peer_(peer),
      region_(region),
      block_offset_(block_offset),
      direct_(fabric.caps(peer).load_store) {
  if (direct_) return;
  // One area per section and peer, reused across calls: the put path
  // allocates only when a call is larger than any before.
  staging_ = &fabric.staging(peer);
  if (staging_->in_flight) {
    fabric.to(peer).flush(peer);
    staging_->in_flight = false;
  }
}

std::byte* RowWriter::section(std::size_t offset, std::size_t bytes) {
  if (direct_)
    return static_cast<std::byte*>(fabric_.to(peer_).peer_ptr(peer_, region_, block_offset_ + offset));
  auto& areas = staging_->areas;
  const std::size_t i = staged_.size();
  if (areas.size() <= i) areas.resize(i + 1);
  if (areas[i].size() < bytes) areas[i].resize(bytes);
  staged_.push_back({offset, bytes, i});
  return areas[i].data();
}

void RowWriter::commit() {
  for (const Staged& s : staged_)
    fabric_.put(peer_, staging_->areas[s.area].data(), region_, block_offset_ + s.offset, s.bytes);
  if (!staged_.empty()) staging_->in_flight = true;
  staged_.clear();
}

}  // namespace epx::comm
