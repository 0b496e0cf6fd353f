// Where each part of a dispatch payload sits in the receiver's block, and the
// row writer that fills a peer's rows directly (load/store transports) or
// through a local staging copy and puts (every other transport).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "comm/transport/fabric.hpp"

namespace epx::comm {

constexpr std::int64_t kScaleBlock = 128;  // channels per FP8 scale

// Byte offsets of the sections of a block of `rows` received rows.
struct PayloadLayout {
  std::size_t row_bytes = 0;    // x row
  std::int64_t num_scales = 0;  // f32 scales per row (0: no scales)
  std::int64_t topk = 0;        // K (0: no topk section, as in the cached dispatch)
  std::size_t x = 0, scales = 0, topk_idx = 0, topk_weights = 0, total = 0;

  PayloadLayout(std::int64_t rows, std::size_t row_bytes, std::int64_t num_scales, std::int64_t topk);
};

// Gives pointers to rows [first, first + n) of one section of a peer's block.
// Direct: pointers into the peer's memory. Otherwise: a local staging area,
// copied over by commit() with one put per section. The puts complete with
// the caller's next signal (or flush) to that peer, so a caller may commit
// writers for several peers before it signals any (the transfers overlap);
// a new writer for a peer whose puts may still be in flight flushes them first.
class RowWriter {
 public:
  RowWriter(transport::Fabric& fabric, int peer, transport::RegionId region, std::size_t block_offset);
  // Destination of `bytes` bytes at `offset` in the block.
  std::byte* section(std::size_t offset, std::size_t bytes);
  void commit();  // puts the staged sections (no-op when direct)

 private:
  struct Staged {
    std::size_t offset;
    std::size_t bytes;
    std::size_t area;  // index in staging_
  };
  transport::Fabric& fabric_;
  int peer_;
  transport::RegionId region_;
  std::size_t block_offset_;
  bool direct_;
  std::vector<Staged> staged_;
  transport::Fabric::Staging* staging_ = nullptr;  // the peer's areas (put path only)
};

}  // namespace epx::comm
