#include "train/data.hpp"

#include <cmath>
#include <fstream>
#include <iterator>

#include "core/check.hpp"

namespace epx::train {

TokenData::TokenData(const DataConfig& data, int vocab_size) {
  std::ifstream in(data.path, std::ios::binary);
  EPX_CHECK(in.good(), InvalidArgument, "config: data.path = '", data.path, "' cannot be read");
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)),
                                         std::istreambuf_iterator<char>());
  const auto width = static_cast<std::size_t>(token_bytes(data.format));
  EPX_CHECK(bytes.size() % width == 0, InvalidArgument, "config: data.path = '", data.path,
            "' has ", bytes.size(), " bytes, not a multiple of ", width, " (format ", data.format,
            ")");
  tokens_.resize(bytes.size() / width);
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    std::uint32_t v = 0;
    for (std::size_t b = 0; b < width; ++b) v |= std::uint32_t{bytes[i * width + b]} << (8 * b);
    EPX_CHECK(v < static_cast<std::uint32_t>(vocab_size), InvalidArgument, "data: token ", i,
              " of '", data.path, "' is ", v, ", expected < model.vocab_size = ", vocab_size);
    tokens_[i] = static_cast<std::int32_t>(v);
  }
  train_ = static_cast<std::int64_t>(data_split(tokens_.size(), data.val_fraction).train);
}

void TokenData::copy(std::int64_t start, int seq_len, std::int32_t* inputs,
                     std::int32_t* targets) const {
  for (int i = 0; i < seq_len; ++i) {
    inputs[i] = tokens_[static_cast<std::size_t>(start + i)];
    targets[i] = tokens_[static_cast<std::size_t>(start + i + 1)];
  }
}

void TokenData::train_sequence(std::int64_t step, std::int64_t j, std::int64_t batch, int seq_len,
                               std::int32_t* inputs, std::int32_t* targets) const {
  const std::int64_t span = train_ - seq_len;
  EPX_CHECK(span > 0, InvalidArgument, "data: ", train_, " training tokens, expected > seq_len ",
            seq_len);
  copy(((step * batch + j) * seq_len) % span, seq_len, inputs, targets);
}

void TokenData::val_sequence(std::int64_t i, std::int64_t j, std::int64_t batch, int seq_len,
                             std::int32_t* inputs, std::int32_t* targets) const {
  const std::int64_t span = val_tokens() - seq_len;
  EPX_CHECK(span > 0, InvalidArgument, "data: ", val_tokens(),
            " validation tokens, expected > seq_len ", seq_len, " (raise data.val_fraction)");
  copy(train_ + ((i * batch + j) * seq_len) % span, seq_len, inputs, targets);
}

double TokenData::unigram_entropy(int vocab_size) const {
  std::vector<std::int64_t> count(static_cast<std::size_t>(vocab_size), 0);
  for (std::int64_t i = 0; i < train_; ++i) ++count[tokens_[i]];
  double h = 0;
  for (const std::int64_t c : count)
    if (c > 0) {
      const double p = static_cast<double>(c) / static_cast<double>(train_);
      h -= p * std::log(p);
    }
  return h;
}

}  // namespace epx::train
