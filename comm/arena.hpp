// The receive space of one rank: regions of the Fabric carved into blocks.
// Received tensors are views of blocks; a block returns to its region when the
// last tensor viewing it is dropped, even after the Buffer itself is gone.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "comm/transport/fabric.hpp"

namespace epx::comm {

class Arena {
 public:
  struct Block {
    transport::RegionId region = -1;
    std::size_t offset = 0;  // in the region
    std::size_t bytes = 0;
    std::byte* ptr = nullptr;
    std::shared_ptr<void> lease;  // frees the block when the last copy goes
  };

  // Collective: creates the first region of `bytes`.
  Arena(transport::Fabric& fabric, std::size_t bytes, const core::Deadline& deadline);

  // A free block of at least `bytes` (64-byte aligned), or nothing if full.
  std::optional<Block> try_allocate(std::size_t bytes);

  // Collective: every rank calls it with the bytes it failed to allocate (0
  // if none); ranks that need space get a new region big enough for it.
  void grow(std::size_t need, const core::Deadline& deadline);

  std::size_t capacity() const;

  // Where [p, p + bytes) sits if it lies inside this rank's receive space
  // (e.g. a tensor from dispatch or Buffer::combine_input): region and offset.
  struct Location {
    transport::RegionId region;
    std::size_t offset;
  };
  std::optional<Location> locate(const void* p, std::size_t bytes) const;

  static constexpr std::size_t kAlign = 64;

 private:
  struct Segment;
  transport::Fabric& fabric_;
  std::vector<std::shared_ptr<Segment>> segments_;
};

}  // namespace epx::comm
