// serve/attention.hpp: the GEMM-shaped prefill attention against the scalar
// loop and an independent double-precision reference, over the blocked KV
// cache (chunks of 1, 7, 64 and 129 rows, contexts that are not multiples of
// the block size, several heads); the scalar loop's bits do not depend on the
// chunking; KvCache::gather; bad arguments.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <epx/error.hpp>

#include "model_kernels_testing.hpp"
#include "serve/attention.hpp"
#include "serve/kv_cache.hpp"

using namespace epx;
using epx::kernels::ktest::expect_bits;
using epx::kernels::ktest::expect_close;
using epx::kernels::ktest::randn;

namespace {

constexpr int kLayers = 2, kBlock = 16;

// A cache holding sequence `seq` with random keys and values at positions
// [0, positions) of every layer (capacity `capacity`), from `seed`.
struct Filled {
  serve::KvCache cache;
  std::vector<float> keys, values;  // [layers, positions, hidden]
  Filled(int hidden, std::int64_t seq, std::int64_t positions, std::int64_t capacity,
         std::uint32_t seed)
      : cache(kLayers, hidden, kBlock, std::size_t{64} << 20) {
    // Another sequence first, so that this one's blocks are not the first ones.
    cache.add(seq + 1, 3 * kBlock);
    cache.add(seq, capacity);
    keys = randn(static_cast<std::size_t>(kLayers * positions * hidden), seed);
    values = randn(keys.size(), seed + 1);
    for (int l = 0; l < kLayers; ++l)
      for (std::int64_t p = 0; p < positions; ++p) {
        const std::size_t off = static_cast<std::size_t>((l * positions + p) * hidden);
        std::memcpy(cache.key(seq, l, p), keys.data() + off, sizeof(float) * hidden);
        std::memcpy(cache.value(seq, l, p), values.data() + off, sizeof(float) * hidden);
      }
  }
};

// Row i (position start + i) over positions 0..start + i, in double.
std::vector<double> reference(const Filled& f, int layer, std::int64_t positions,
                              std::int64_t start, std::int64_t rows, std::int64_t heads,
                              std::int64_t hd, const std::vector<float>& q) {
  const std::int64_t H = heads * hd;
  std::vector<double> out(static_cast<std::size_t>(rows * H), 0.0);
  const float* K = f.keys.data() + layer * positions * H;
  const float* V = f.values.data() + layer * positions * H;
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t h = 0; h < heads; ++h) {
      const std::int64_t n = start + i + 1;
      std::vector<double> s(static_cast<std::size_t>(n));
      double mx = -INFINITY;
      for (std::int64_t j = 0; j < n; ++j) {
        double dot = 0.0;
        for (std::int64_t d = 0; d < hd; ++d)
          dot += double(q[i * H + h * hd + d]) * double(K[j * H + h * hd + d]);
        s[j] = dot / std::sqrt(double(hd));
        mx = std::max(mx, s[j]);
      }
      double sum = 0.0;
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (std::int64_t j = 0; j < n; ++j)
        for (std::int64_t d = 0; d < hd; ++d)
          out[i * H + h * hd + d] += s[j] / sum * double(V[j * H + h * hd + d]);
    }
  return out;
}

struct Shape {
  std::int64_t heads, head_dim, start, rows;
};

}  // namespace

TEST(ServeAttention, GemmMatchesScalarAndDoubleReference) {
  const Shape shapes[] = {
      {3, 16, 0, 1},   {3, 16, 5, 1},   {4, 32, 0, 7},    {4, 32, 21, 7},  {2, 64, 0, 64},
      {2, 64, 37, 64}, {4, 32, 0, 129}, {3, 16, 50, 129}, {1, 128, 3, 65}, {4, 8, 16, 33},
  };
  std::uint32_t seed = 1;
  for (const Shape& sh : shapes) {
    const std::int64_t H = sh.heads * sh.head_dim, positions = sh.start + sh.rows;
    // The capacity past the context, and not a multiple of the block either.
    Filled f(static_cast<int>(H), 7, positions, positions + 5, seed);
    const std::vector<float> q = randn(static_cast<std::size_t>(sh.rows * H), seed + 2);
    seed += 3;
    for (int layer = 0; layer < kLayers; ++layer) {
      const std::string what = "heads " + std::to_string(sh.heads) + " x " +
                               std::to_string(sh.head_dim) + ", start " + std::to_string(sh.start) +
                               ", rows " + std::to_string(sh.rows) + ", layer " +
                               std::to_string(layer);
      std::vector<float> gemm(q.size(), NAN), scalar(q.size(), NAN);
      serve::AttentionScratch s;
      serve::SegmentAttention a{7,        layer,       sh.start, sh.rows,
                                sh.heads, sh.head_dim, q.data(), gemm.data()};
      serve::attention_gemm(f.cache, a, s);
      a.out = scalar.data();
      serve::attention_scalar(f.cache, a, s);
      const std::vector<double> want =
          reference(f, layer, positions, sh.start, sh.rows, sh.heads, sh.head_dim, q);
      expect_close(gemm, want, 1e-5, "gemm, " + what);
      expect_close(scalar, want, 1e-5, "scalar, " + what);
      expect_close(gemm, std::vector<double>(scalar.begin(), scalar.end()), 1e-5,
                   "gemm against scalar, " + what);
      // The same call again (scratch reused, grown by an earlier shape): the same bits.
      std::vector<float> again(q.size(), NAN);
      a.out = again.data();
      serve::attention_gemm(f.cache, a, s);
      expect_bits(again, gemm, "gemm repeated, " + what);
    }
  }
}

TEST(ServeAttention, ScalarBitsDoNotDependOnTheChunking) {
  const std::int64_t heads = 4, hd = 16, H = heads * hd, positions = 45;
  Filled f(static_cast<int>(H), 3, positions, 48, 11);
  const std::vector<float> q = randn(static_cast<std::size_t>(positions * H), 12);
  serve::AttentionScratch s;
  std::vector<float> whole(q.size()), chunked(q.size());
  serve::attention_scalar(f.cache, {3, 1, 0, positions, heads, hd, q.data(), whole.data()}, s);
  // Chunks of 1, 7, 16 and the rest.
  const std::int64_t cuts[] = {0, 1, 8, 24, positions};
  for (int c = 0; c + 1 < 5; ++c)
    serve::attention_scalar(f.cache,
                            {3, 1, cuts[c], cuts[c + 1] - cuts[c], heads, hd,
                             q.data() + cuts[c] * H, chunked.data() + cuts[c] * H},
                            s);
  expect_bits(chunked, whole, "scalar attention in chunks");
}

TEST(ServeAttention, GatherCopiesTheBlockedRows) {
  const int H = 24;
  const std::int64_t positions = 2 * kBlock + 3;
  Filled f(H, 5, positions, positions, 21);
  std::vector<float> k(static_cast<std::size_t>(positions * H)), v(k.size());
  for (int l = 0; l < kLayers; ++l) {
    f.cache.gather(5, l, positions, k.data(), v.data());
    const std::size_t off = static_cast<std::size_t>(l * positions * H);
    expect_bits(k, std::vector<float>(f.keys.begin() + off, f.keys.begin() + off + k.size()),
                "keys, layer " + std::to_string(l));
    expect_bits(v, std::vector<float>(f.values.begin() + off, f.values.begin() + off + v.size()),
                "values, layer " + std::to_string(l));
  }
  f.cache.gather(5, 0, 0, nullptr, nullptr);  // nothing to copy
  EXPECT_THROW(f.cache.gather(5, 0, f.cache.capacity(5) + 1, k.data(), v.data()), Error);
  EXPECT_THROW(f.cache.gather(5, kLayers, 1, k.data(), v.data()), Error);
  EXPECT_THROW(f.cache.gather(99, 0, 1, k.data(), v.data()), Error);
}

TEST(ServeAttention, RejectsBadArguments) {
  const std::int64_t heads = 2, hd = 8, H = heads * hd;
  Filled f(static_cast<int>(H), 1, 10, 20, 31);
  std::vector<float> q(static_cast<std::size_t>(8 * H), 0.5f), out(q.size());
  serve::AttentionScratch s;
  using Fn = void (*)(serve::KvCache&, const serve::SegmentAttention&, serve::AttentionScratch&);
  for (Fn fn : {Fn{serve::attention_gemm}, Fn{serve::attention_scalar}}) {
    auto call = [&](serve::SegmentAttention a) { fn(f.cache, a, s); };
    EXPECT_THROW(call({1, 0, 0, 4, 3, hd, q.data(), out.data()}), Error);       // heads x hd != H
    EXPECT_THROW(call({1, 0, 0, 4, heads, 0, q.data(), out.data()}), Error);    // head_dim 0
    EXPECT_THROW(call({1, 0, -1, 4, heads, hd, q.data(), out.data()}), Error);  // start < 0
    EXPECT_THROW(call({1, 0, 0, -1, heads, hd, q.data(), out.data()}), Error);  // rows < 0
    EXPECT_THROW(call({1, 0, 30, 8, heads, hd, q.data(), out.data()}), Error);  // past capacity 32
    EXPECT_THROW(call({1, kLayers, 0, 4, heads, hd, q.data(), out.data()}), Error);  // layer
    EXPECT_THROW(call({42, 0, 0, 1, heads, hd, q.data(), out.data()}), Error);  // unknown sequence
    EXPECT_THROW(call({1, 0, 0, 4, heads, hd, nullptr, out.data()}), Error);    // no q
    call({1, 0, 3, 0, heads, hd, nullptr, nullptr});                            // no rows: nothing
  }
}
