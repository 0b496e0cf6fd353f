// sum_rows against a plain loop: order, f32 accumulation, one rounding, +0 start.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include <epx/error.hpp>

#include "kernels/float_convert.hpp"
#include "kernels/reduce.hpp"

namespace epx::kernels {
namespace {

TEST(SumRows, Bf16MatchesOrderedF32SumWithOneRounding) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 10.0f);
  for (std::int64_t hidden : {1, 7, 1023, 1024, 1025, 3000}) {
    for (int n : {0, 1, 2, 5}) {
      std::vector<std::vector<std::uint16_t>> rows(n, std::vector<std::uint16_t>(hidden));
      for (auto& r : rows)
        for (auto& v : r) v = float_to_bf16(nd(rng));
      std::vector<const void*> ptrs;
      for (auto& r : rows) ptrs.push_back(r.data());
      std::vector<std::uint16_t> got(hidden, 0xFFFF);
      sum_rows(ptrs.data(), n, DType::bf16, hidden, got.data());
      for (std::int64_t i = 0; i < hidden; ++i) {
        float acc = 0.0f;
        for (int j = 0; j < n; ++j) acc += bf16_to_float(rows[j][i]);
        ASSERT_EQ(got[i], float_to_bf16(acc)) << "hidden " << hidden << " n " << n << " i " << i;
      }
    }
  }
}

TEST(SumRows, F32IsExactOrderedSumAndNegativeZeroBecomesPositive) {
  std::vector<float> a = {-0.0f, 1e20f, 3.0f}, b = {-0.0f, -1e20f, 0.25f};
  const void* one[] = {a.data()};
  const void* two[] = {a.data(), b.data()};
  std::vector<float> out(3);
  sum_rows(one, 1, DType::f32, 3, out.data());
  EXPECT_FALSE(std::signbit(out[0]));  // 0 + -0 = +0, as the references sum
  EXPECT_EQ(out[1], 1e20f);
  sum_rows(two, 2, DType::f32, 3, out.data());
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(out[2], 3.25f);
}

TEST(WeightedSumRows, MatchesMultiplyThenAddInOrder) {
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (std::int64_t hidden : {1, 1000, 1025}) {
    for (int n : {0, 1, 3, 8}) {
      std::vector<std::vector<float>> rows(n, std::vector<float>(hidden));
      std::vector<float> w(n);
      for (auto& r : rows)
        for (auto& v : r) v = nd(rng);
      for (auto& v : w) v = nd(rng);
      std::vector<const void*> ptrs;
      for (auto& r : rows) ptrs.push_back(r.data());
      std::vector<float> got(hidden, 7.0f);
      weighted_sum_rows(ptrs.data(), w.data(), n, DType::f32, hidden, got.data());
      for (std::int64_t i = 0; i < hidden; ++i) {
        float acc = 0.0f;
        for (int j = 0; j < n; ++j) {
          const volatile float product = w[j] * rows[j][i];  // rounded on its own, as specified
          acc = acc + product;
        }
        ASSERT_EQ(std::memcmp(&got[i], &acc, 4), 0) << "hidden " << hidden << " n " << n << " i " << i;
      }
    }
  }
}

TEST(SumRows, RejectsOtherDtypes) {
  std::vector<std::uint8_t> out(4);
  EXPECT_THROW(sum_rows(nullptr, 0, DType::e4m3, 4, out.data()), Error);
}

}  // namespace
}  // namespace epx::kernels

namespace epx::kernels {
namespace {

// Rows of both dtypes into either dtype: the same ordered f32 sum from +0,
// rounded once at the end.
TEST(SumRowsMixed, MatchesOrderedF32SumOfMixedRows) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 100.0f);
  for (std::int64_t hidden : {1, 5, 1024, 1500}) {
    for (int n : {0, 1, 3, 6}) {
      std::vector<std::vector<float>> f(n, std::vector<float>(hidden));
      std::vector<std::vector<std::uint16_t>> b(n, std::vector<std::uint16_t>(hidden));
      std::vector<const void*> ptrs;
      std::vector<DType> dtypes;
      for (int j = 0; j < n; ++j) {
        for (std::int64_t i = 0; i < hidden; ++i) f[j][i] = nd(rng), b[j][i] = float_to_bf16(nd(rng));
        const bool bf16 = j % 2 == 1;
        ptrs.push_back(bf16 ? static_cast<const void*>(b[j].data()) : f[j].data());
        dtypes.push_back(bf16 ? DType::bf16 : DType::f32);
      }
      std::vector<float> got32(hidden, 7.0f);
      std::vector<std::uint16_t> got16(hidden, 0xFFFF);
      sum_rows_mixed(ptrs.data(), dtypes.data(), n, hidden, DType::f32, got32.data());
      sum_rows_mixed(ptrs.data(), dtypes.data(), n, hidden, DType::bf16, got16.data());
      for (std::int64_t i = 0; i < hidden; ++i) {
        float acc = 0.0f;
        for (int j = 0; j < n; ++j) acc += j % 2 == 1 ? bf16_to_float(b[j][i]) : f[j][i];
        ASSERT_EQ(got32[i], acc) << "hidden " << hidden << " n " << n << " i " << i;
        ASSERT_EQ(got16[i], float_to_bf16(acc)) << "hidden " << hidden << " n " << n << " i " << i;
      }
    }
  }
  const float one = 1.0f;
  const void* row[] = {&one};
  const DType bad[] = {DType::e4m3};
  float out = 0;
  EXPECT_THROW(sum_rows_mixed(row, bad, 1, 1, DType::f32, &out), Error);
}

}  // namespace
}  // namespace epx::kernels
