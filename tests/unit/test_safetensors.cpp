// safetensors: a round trip, a file written byte by byte (F32 and BF16), and
// malformed files refused with a message naming the file.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <epx/error.hpp>

#include "model/safetensors.hpp"

namespace epx::model {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("epx_st_" + std::to_string(::getpid()) + "_" + name)).string();
}

void write_raw(const std::string& path, const std::string& header, const std::vector<unsigned char>& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

void expect_refused(const std::string& path, const std::string& words) {
  try {
    SafetensorsReader r(path);
    ADD_FAILURE() << path << " was accepted, expected an error saying '" << words << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(Safetensors, RoundTrip) {
  std::mt19937 rng(3);
  std::normal_distribution<float> d;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& shape : std::vector<std::vector<std::int64_t>>{{3, 5}, {7}, {}, {0, 4}, {2, 3, 4}}) {
    Tensor t = Tensor::empty(shape, DType::f32);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
    tensors.emplace_back("t" + std::to_string(tensors.size()), t);
  }
  const std::string path = temp_path("roundtrip.safetensors");
  save_safetensors(path, tensors, {{"format", "pt"}, {"step", "12"}});
  SafetensorsReader r(path);
  EXPECT_EQ(r.names().size(), tensors.size());
  EXPECT_EQ(r.metadata().at("format"), "pt");
  EXPECT_EQ(r.metadata().at("step"), "12");
  for (const auto& [name, t] : tensors) {
    EXPECT_EQ(r.dtype(name), "F32");
    const Tensor back = r.load_f32(name, t.shape());
    ASSERT_EQ(back.shape(), t.shape());
    EXPECT_EQ(std::memcmp(back.raw(), t.raw(), t.nbytes()), 0) << name;
  }
  // The header is padded to a multiple of 8 bytes.
  std::ifstream in(path, std::ios::binary);
  unsigned char le[8];
  in.read(reinterpret_cast<char*>(le), 8);
  EXPECT_EQ(le[0] % 8, 0);
  EXPECT_THROW(r.load_f32("t0", {5, 3}), Error);
  EXPECT_THROW(r.load_f32("missing"), Error);
  std::remove(path.c_str());
}

TEST(Safetensors, ReadsHandWrittenF32AndBF16) {
  // F32 1.5 and -2.0; BF16 0x3FC0 (1.5) and 0xC000 (-2.0), little-endian.
  const std::vector<unsigned char> data = {0x00, 0x00, 0xC0, 0x3F, 0x00, 0x00, 0x00, 0xC0,
                                           0xC0, 0x3F, 0x00, 0xC0};
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]}})";
  const std::string path = temp_path("hand.safetensors");
  write_raw(path, header, data);
  SafetensorsReader r(path);
  const Tensor a = r.load_f32("a"), b = r.load_f32("b");
  EXPECT_EQ(a.data<float>()[0], 1.5f);
  EXPECT_EQ(a.data<float>()[1], -2.0f);
  EXPECT_EQ(b.shape(), (std::vector<std::int64_t>{1, 2}));
  EXPECT_EQ(b.data<float>()[0], 1.5f);
  EXPECT_EQ(b.data<float>()[1], -2.0f);
  std::remove(path.c_str());
}

TEST(Safetensors, RefusesMalformedFiles) {
  const std::string path = temp_path("bad.safetensors");
  const std::vector<unsigned char> eight(8, 0);
  write_raw(path, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", eight);
  expect_refused(path, "outside");
  write_raw(path, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight);
  expect_refused(path, "expected 12");
  write_raw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})", eight);
  expect_refused(path, "overlap");
  write_raw(path, R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}})", eight);
  expect_refused(path, "unknown dtype");
  write_raw(path, "{not json", eight);
  expect_refused(path, "not valid JSON");
  write_raw(path, std::string(100000, '[') + std::string(100000, ']'), {});
  expect_refused(path, "deeper");
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << "\xff\xff\xff\xff\xff\xff\xff\x7f{}";
  }
  expect_refused(path, "header length");
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << "abc";
  }
  expect_refused(path, "too short");
  expect_refused(temp_path("does-not-exist"), "cannot be opened");
  std::remove(path.c_str());
}

}  // namespace
}  // namespace epx::model
