#include "serve/kv_cache.hpp"

#include <algorithm>
#include <cstring>

#include "core/check.hpp"

namespace epx::serve {

KvCache::KvCache(int layers, int hidden, int block_size, std::size_t bytes)
    : layers_(layers), hidden_(hidden), block_size_(block_size) {
  EPX_CHECK(layers > 0 && hidden > 0 && block_size > 0, InvalidArgument, "KvCache: layers ", layers,
            ", hidden ", hidden, ", block_size ", block_size, ", expected all > 0");
  num_blocks_ = static_cast<int>(bytes / block_bytes());
  storage_.resize(static_cast<std::size_t>(num_blocks_) * block_bytes() / sizeof(float));
  for (int b = num_blocks_ - 1; b >= 0; --b) free_.push_back(b);
}

std::size_t KvCache::block_bytes() const noexcept {
  return static_cast<std::size_t>(layers_) * 2 * block_size_ * hidden_ * sizeof(float);
}

void KvCache::add(std::int64_t seq, std::int64_t capacity) {
  EPX_CHECK(!contains(seq), InvalidArgument, "KvCache: sequence ", seq, " is already cached");
  const std::int64_t n = blocks_for(capacity, block_size_);
  EPX_CHECK_LE(n, static_cast<std::int64_t>(free_.size()), InvalidArgument, "KvCache: sequence ",
               seq, " of ", capacity, " positions");
  std::vector<int>& t = tables_[seq];
  for (std::int64_t i = 0; i < n; ++i) {
    t.push_back(free_.back());
    free_.pop_back();
  }
}

void KvCache::release(std::int64_t seq) {
  const auto it = tables_.find(seq);
  if (it == tables_.end()) return;
  for (auto b = it->second.rbegin(); b != it->second.rend(); ++b) free_.push_back(*b);
  tables_.erase(it);
}

std::int64_t KvCache::capacity(std::int64_t seq) const {
  const auto it = tables_.find(seq);
  return it == tables_.end() ? 0 : static_cast<std::int64_t>(it->second.size()) * block_size_;
}

float* KvCache::at(std::int64_t seq, int layer, int kv, std::int64_t pos) {
  const auto it = tables_.find(seq);
  EPX_CHECK(it != tables_.end(), Internal, "KvCache: sequence ", seq, " is not cached");
  EPX_CHECK(pos >= 0 && pos < static_cast<std::int64_t>(it->second.size()) * block_size_, Internal,
            "KvCache: position ", pos, " of sequence ", seq, " is past its ",
            it->second.size() * block_size_, " reserved positions");
  const std::size_t block = static_cast<std::size_t>(it->second[pos / block_size_]);
  const std::size_t slot =
      ((static_cast<std::size_t>(layer) * 2 + kv) * block_size_ + pos % block_size_);
  return storage_.data() + block * (block_bytes() / sizeof(float)) + slot * hidden_;
}

float* KvCache::key(std::int64_t seq, int layer, std::int64_t pos) {
  return at(seq, layer, 0, pos);
}
float* KvCache::value(std::int64_t seq, int layer, std::int64_t pos) {
  return at(seq, layer, 1, pos);
}

void KvCache::gather(std::int64_t seq, int layer, std::int64_t n, float* keys, float* values) {
  EPX_CHECK(layer >= 0 && layer < layers_, InvalidArgument, "KvCache::gather: layer ", layer,
            ", expected in [0, ", layers_, ")");
  EPX_CHECK(n >= 0 && n <= capacity(seq), InvalidArgument, "KvCache::gather: ", n,
            " positions of sequence ", seq, ", expected in [0, ", capacity(seq), "]");
  const std::size_t row = static_cast<std::size_t>(hidden_);
  for (std::int64_t p = 0; p < n; p += block_size_) {
    const std::size_t count = static_cast<std::size_t>(std::min<std::int64_t>(block_size_, n - p));
    std::memcpy(keys + p * hidden_, at(seq, layer, 0, p), sizeof(float) * row * count);
    std::memcpy(values + p * hidden_, at(seq, layer, 1, p), sizeof(float) * row * count);
  }
}

}  // namespace epx::serve
