// The KV cache of one rank: fixed-size blocks of block_size positions, each
// holding every layer's keys and values for those positions, carved out of
// one allocation of at most the given bytes. A sequence reserves all the
// blocks it can ever need (prompt + max_tokens) when it is admitted, so a
// running sequence never waits for memory and nothing has to be preempted;
// the scheduler on rank 0 keeps the same block counts for every rank
// (blocks_for) and admits a request only where its blocks are free.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

namespace epx::serve {

class KvCache {
 public:
  // bytes: the budget (--kv-memory); the cache holds floor(bytes / block_bytes) blocks.
  KvCache(int layers, int hidden, int block_size, std::size_t bytes);

  int layers() const noexcept { return layers_; }
  int hidden() const noexcept { return hidden_; }
  int block_size() const noexcept { return block_size_; }
  int num_blocks() const noexcept { return num_blocks_; }
  int free_blocks() const noexcept { return static_cast<int>(free_.size()); }
  std::size_t block_bytes() const noexcept;
  static std::int64_t blocks_for(std::int64_t positions, int block_size) noexcept {
    return (positions + block_size - 1) / block_size;
  }

  // Reserves blocks for positions [0, capacity) of sequence `seq`. Throws
  // InvalidArgument if seq is already present or the blocks are not free.
  void add(std::int64_t seq, std::int64_t capacity);
  void release(std::int64_t seq);  // no-op for an unknown seq
  bool contains(std::int64_t seq) const { return tables_.count(seq) != 0; }
  std::int64_t capacity(std::int64_t seq) const;

  // [hidden] floats of layer `layer` at position `pos` (< capacity) of `seq`.
  float* key(std::int64_t seq, int layer, std::int64_t pos);
  float* value(std::int64_t seq, int layer, std::int64_t pos);
  // Copies the keys and the values of positions [0, n) (n <= capacity) of
  // `seq` at `layer` into keys and values, [n, hidden] each (contiguous,
  // for the GEMMs of serve/attention.hpp; a block's positions are
  // consecutive rows, so one copy per block and kind).
  void gather(std::int64_t seq, int layer, std::int64_t n, float* keys, float* values);

 private:
  float* at(std::int64_t seq, int layer, int kv, std::int64_t pos);
  int layers_, hidden_, block_size_, num_blocks_;
  std::vector<float> storage_;
  std::vector<int> free_;  // a stack: the lowest block ids are handed out first
  std::map<std::int64_t, std::vector<int>> tables_;
};

}  // namespace epx::serve
