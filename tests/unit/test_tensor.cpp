// Tensor, dtype and error basics.
#include <gtest/gtest.h>

#include <cstring>

#include <epx/epx.hpp>

namespace epx {
namespace {

TEST(Tensor, EmptyHasShapeDtypeAndAlignedStorage) {
  Tensor t = Tensor::empty({3, 5}, DType::bf16);
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.ndim(), 2);
  EXPECT_EQ(t.dim(0), 3);
  EXPECT_EQ(t.dim(-1), 5);
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.nbytes(), 30u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.raw()) % 64, 0u);
  EXPECT_EQ(t.describe(), "bf16[3,5] cpu");
}

TEST(Tensor, DataChecksTheElementType) {
  Tensor t = Tensor::zeros({4}, DType::f32);
  EXPECT_EQ(t.data<float>()[3], 0.0f);
  EXPECT_THROW(t.data<std::int32_t>(), Error);
  Tensor b = Tensor::zeros({2}, DType::boolean);
  EXPECT_FALSE(b.data<bool>()[1]);
  Tensor q = Tensor::zeros({2}, DType::e4m3);
  EXPECT_NO_THROW(q.data<std::uint8_t>());
  try {
    t.data<std::int64_t>();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("int64_t"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("f32"), std::string::npos) << e.what();
  }
}

TEST(Tensor, WrapSharesCallerMemoryAndCloneCopies) {
  float buf[6] = {1, 2, 3, 4, 5, 6};
  Tensor w = Tensor::wrap(buf, {2, 3}, DType::f32);
  EXPECT_EQ(w.raw(), buf);
  Tensor c = w.clone();
  buf[0] = 42;
  EXPECT_EQ(w.data<float>()[0], 42.0f);
  EXPECT_EQ(c.data<float>()[0], 1.0f);
  EXPECT_NE(c.raw(), w.raw());
}

TEST(Tensor, ZeroSizedAndScalar) {
  Tensor z = Tensor::empty({0, 7}, DType::i64);
  EXPECT_EQ(z.numel(), 0);
  EXPECT_EQ(z.nbytes(), 0u);
  EXPECT_NO_THROW(z.clone());
  Tensor s = Tensor::zeros({}, DType::i32);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(Tensor::wrap(nullptr, {0}, DType::u8).numel(), 0);
}

TEST(Tensor, BadShapesAreRejected) {
  EXPECT_THROW(Tensor::empty({1, 2, 3, 4, 5}, DType::f32), Error);
  EXPECT_THROW(Tensor::empty({-1}, DType::f32), Error);
  EXPECT_THROW(Tensor::wrap(nullptr, {3}, DType::f32), Error);
  Tensor t = Tensor::empty({2}, DType::f32);
  EXPECT_THROW(t.dim(1), Error);
  EXPECT_THROW(Tensor().clone(), Error);
}

TEST(DType, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::f32), 4u);
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_EQ(dtype_size(DType::f16), 2u);
  EXPECT_EQ(dtype_size(DType::e4m3), 1u);
  EXPECT_EQ(dtype_size(DType::e5m2), 1u);
  EXPECT_EQ(dtype_size(DType::i32), 4u);
  EXPECT_EQ(dtype_size(DType::i64), 8u);
  EXPECT_EQ(dtype_size(DType::u8), 1u);
  EXPECT_EQ(dtype_size(DType::boolean), 1u);
  EXPECT_EQ(dtype_size(DType::f64), 8u);
  EXPECT_STREQ(dtype_name(DType::f64), "f64");
  EXPECT_STREQ(dtype_name(DType::e4m3), "e4m3");
}

TEST(Error, CarriesItsCode) {
  Error e(ErrorCode::Timeout, "waited");
  EXPECT_EQ(e.code(), ErrorCode::Timeout);
  EXPECT_STREQ(e.what(), "waited");
  EXPECT_STREQ(to_string(ErrorCode::PeerFailure), "PeerFailure");
}

}  // namespace
}  // namespace epx
