// Training data: a file of tokens (bytes, or little-endian u16/u32 ids), its
// last floor(total * val_fraction) tokens the validation split, and the
// fixed sequence order of docs/train.md: sequence j of step s starts at
// ((s B + j) seq_len) mod (N - seq_len) of the N training tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/config.hpp"

namespace epx::train {

class TokenData {
 public:
  // Reads the whole file; throws InvalidArgument naming the path and the
  // problem (missing, a size not a multiple of the id size, an id >= vocab).
  TokenData(const DataConfig& data, int vocab_size);

  std::int64_t total() const noexcept { return static_cast<std::int64_t>(tokens_.size()); }
  std::int64_t train_tokens() const noexcept { return train_; }  // N
  std::int64_t val_tokens() const noexcept { return total() - train_; }

  // Training sequence `j` (0 <= j < batch) of step `step` (from 0), with
  // batch = B: seq_len inputs and the next-token targets.
  void train_sequence(std::int64_t step, std::int64_t j, std::int64_t batch, int seq_len,
                      std::int32_t* inputs, std::int32_t* targets) const;
  // Validation sequence `j` of eval batch `i`: the same rule on the
  // validation split.
  void val_sequence(std::int64_t i, std::int64_t j, std::int64_t batch, int seq_len,
                    std::int32_t* inputs, std::int32_t* targets) const;

  // The unigram entropy of the training split in nats (the loss a model that
  // ignores context would reach), for the progress line.
  double unigram_entropy(int vocab_size) const;

 private:
  void copy(std::int64_t start, int seq_len, std::int32_t* inputs, std::int32_t* targets) const;
  std::vector<std::int32_t> tokens_;
  std::int64_t train_ = 0;
};

}  // namespace epx::train
