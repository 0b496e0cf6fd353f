// safetensors: round trips, the writer's exact bytes, hand-made F32/BF16
// files, and malformed files refused with the path named.
#include <gtest/gtest.h>

#include <dirent.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include <epx/error.hpp>
#include <epx/tensor.hpp>

#include "model/safetensors.hpp"

namespace epx::model {
namespace {

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "epx_st_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const auto& f : files()) std::remove((dir_ + "/" + f).c_str());
    ::rmdir(dir_.c_str());
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(dir_.c_str())) {
      while (dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
          out.push_back(e->d_name);
      ::closedir(d);
    }
    return out;
  }
  static std::string slurp(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream os;
    os << in.rdbuf();
    return os.str();
  }
  // A file of: the 8-byte little-endian `length` (the header's size unless
  // given), the header text and the data bytes.
  std::string write_raw(const std::string& name, const std::string& header, const std::string& data,
                        std::uint64_t length = ~std::uint64_t{0}) {
    if (length == ~std::uint64_t{0}) length = header.size();
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(length >> (8 * i));
    bytes += header;
    bytes += data;
    const std::string p = path(name);
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
  std::string dir_;
};

Tensor filled(std::vector<std::int64_t> shape, float start) {
  Tensor t = Tensor::empty(std::move(shape), DType::f32);
  float* p = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = start + 0.25f * static_cast<float>(i);
  return t;
}

std::string le_f32(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(u >> (8 * i));
  return s;
}

std::string le_u16(std::uint16_t v) {
  return std::string{static_cast<char>(v & 0xff), static_cast<char>(v >> 8)};
}

// Runs `fn`, expects InvalidArgument whose message names `file` and holds `part`.
void expect_invalid(const std::function<void()>& fn, const std::string& file,
                    const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << part << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST_F(Safetensors, RoundTripKeepsNamesShapesBitsAndMetadata) {
  Tensor a = filled({2, 3}, -1.0f);
  // The values a raw copy must keep: signed zero, infinities, NaN, a denormal.
  a.data<float>()[0] = -0.0f;
  a.data<float>()[1] = std::numeric_limits<float>::infinity();
  a.data<float>()[2] = std::numeric_limits<float>::quiet_NaN();
  a.data<float>()[3] = std::numeric_limits<float>::denorm_min();
  Tensor scalar = filled({}, 7.5f);
  Tensor vec = filled({5}, 2.0f);
  Tensor empty2 = Tensor::empty({0, 4}, DType::f32);
  Tensor empty1 = Tensor::empty({0}, DType::f32);
  Tensor four = filled({2, 1, 3, 2}, 0.0f);
  const std::vector<std::pair<std::string, Tensor>> in = {
      {"model.layers.0.w", a}, {"s", scalar},  {"v", vec},
      {"e2", empty2},          {"e1", empty1}, {"x4", four}};
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "7"}, {"empty", ""}};
  const std::string p = path("m.safetensors");
  save_safetensors(p, in, meta);
  EXPECT_EQ(files(), std::vector<std::string>{"m.safetensors"}) << "temporary file left behind";

  SafetensorsReader r(p);
  EXPECT_EQ(r.path(), p);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"e1", "e2", "model.layers.0.w", "s", "v", "x4"}));
  EXPECT_EQ(r.metadata(), meta);
  for (const auto& [name, t] : in) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(r.contains(name));
    EXPECT_EQ(r.dtype(name), "F32");
    EXPECT_EQ(r.shape(name), t.shape());
    Tensor back = r.load_f32(name, t.shape());
    EXPECT_EQ(back.dtype(), DType::f32);
    EXPECT_EQ(back.shape(), t.shape());
    EXPECT_EQ(std::memcmp(back.raw(), t.raw(), t.nbytes()), 0);
  }
  EXPECT_FALSE(r.contains("missing"));
}

TEST_F(Safetensors, NoTensorsAndNoMetadata) {
  const std::string p = path("none.safetensors");
  save_safetensors(p, {});
  const std::string bytes = slurp(p);
  ASSERT_EQ(bytes.size(), 16u);
  EXPECT_EQ(bytes.substr(8), "{}      ");
  SafetensorsReader r(p);
  EXPECT_TRUE(r.names().empty());
  EXPECT_TRUE(r.metadata().empty());
}

TEST_F(Safetensors, WriterBytesAreExactlyTheFormat) {
  Tensor w = Tensor::empty({2}, DType::f32);
  w.data<float>()[0] = 1.0f;
  w.data<float>()[1] = -2.0f;
  Tensor b = Tensor::empty({}, DType::f32);
  b.data<float>()[0] = 0.5f;
  const std::string p = path("exact.safetensors");
  save_safetensors(p, {{"w", w}, {"b", b}}, {{"k", "v"}});

  // Metadata first, then the tensors in the order given, compact JSON,
  // spaces to a multiple of 8, then the data in the same order.
  std::string header =
      R"({"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[],"data_offsets":[8,12]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  ASSERT_EQ(header.size() % 8, 0u);
  std::string expected(8, '\0');
  for (int i = 0; i < 8; ++i) expected[i] = static_cast<char>(header.size() >> (8 * i));
  expected += header + le_f32(1.0f) + le_f32(-2.0f) + le_f32(0.5f);
  EXPECT_EQ(slurp(p), expected);
}

TEST_F(Safetensors, OverwritesAnExistingFile) {
  const std::string p = path("o.safetensors");
  save_safetensors(p, {{"a", filled({3}, 1.0f)}});
  save_safetensors(p, {{"b", filled({2}, 5.0f)}});
  SafetensorsReader r(p);
  EXPECT_EQ(r.names(), std::vector<std::string>{"b"});
  EXPECT_EQ(r.load_f32("b").data<float>()[1], 5.25f);
  EXPECT_EQ(files().size(), 1u);
}

TEST_F(Safetensors, ReadsHandWrittenBf16AndF32) {
  // BF16 bit patterns: 1.0 = 0x3f80, -2.0 = 0xc000, 3.140625 = 0x4049,
  // the smallest bf16 denormal 0x0001 = 2^-133, -inf = 0xff80.
  const std::string bf16 = le_u16(0x3f80) + le_u16(0xc000) + le_u16(0x4049) + le_u16(0x0001) +
                           le_u16(0xff80) + le_u16(0x0000);
  const std::string f32 = le_f32(1.5f) + le_f32(-0.1f);
  std::string header =
      R"({"f":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},)"
      R"("h":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},"__metadata__":{"a":"b"}})";
  const std::string p = write_raw("hand.safetensors", header, bf16 + f32);
  SafetensorsReader r(p);
  EXPECT_EQ(r.dtype("h"), "BF16");
  EXPECT_EQ(r.metadata().at("a"), "b");
  Tensor h = r.load_f32("h", {2, 3});
  ASSERT_EQ(h.dtype(), DType::f32);
  const float* v = h.data<float>();
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -2.0f);
  EXPECT_EQ(v[2], 3.140625f);
  EXPECT_EQ(v[3], std::ldexp(1.0f, -133));
  EXPECT_EQ(v[4], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(v[5], 0.0f);
  Tensor f = r.load_f32("f");
  EXPECT_EQ(f.data<float>()[0], 1.5f);
  EXPECT_EQ(f.data<float>()[1], -0.1f);
}

TEST_F(Safetensors, RefusesMalformedFilesNamingThePath) {
  const std::string one = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string data8(8, '\x01');
  struct Case {
    const char* what;
    std::string header, data;
    std::uint64_t length;
    const char* part;
  };
  const std::uint64_t own = ~std::uint64_t{0};
  std::string deep = R"({"t":{"dtype":"F32","shape":)" + std::string(5000, '[') +
                     std::string(5000, ']') + R"(,"data_offsets":[0,0]}})";
  const std::vector<Case> cases = {
      {"nothing after a zero length", "", "", own, "header length"},
      {"length larger than the file", one, data8, one.size() + 100, "header length"},
      {"length zero", one, data8, 0, "header length"},
      {"huge length", one, data8, std::uint64_t{1} << 62, "header length"},
      {"truncated data", one, "\x01\x02\x03", own, "out of range"},
      {"truncated header", one.substr(0, 20), "", own, "not valid JSON"},
      {"not JSON", "hello world!", "", own, "not valid JSON"},
      {"not an object", "[1,2]", "", own, "not a JSON object"},
      {"offsets out of range", R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", data8,
       own, "out of range"},
      {"offsets reversed", R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data8, own,
       "out of range"},
      {"negative offset", R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", data8, own,
       "non-negative"},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       std::string(12, '\0'), own, "overlaps"},
      {"gap", R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data8, own, "gap"},
      {"trailing bytes", R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", data8, own,
       "cover 4 of the 8"},
      {"dtype x shape mismatch", R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8,
       own, "expected 12"},
      {"bf16 size mismatch", R"({"t":{"dtype":"BF16","shape":[2],"data_offsets":[0,8]}})", data8,
       own, "expected 4"},
      {"unknown dtype", R"({"t":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", data8, own,
       "unknown dtype"},
      {"negative shape", R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8, own,
       "non-negative"},
      {"fractional shape", R"({"t":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", data8,
       own, "non-negative"},
      {"shape overflow",
       R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", data8, own,
       "overflows"},
      {"missing dtype", R"({"t":{"shape":[2],"data_offsets":[0,8]}})", data8, own, "dtype"},
      {"one offset", R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", data8, own,
       "data_offsets"},
      {"metadata not strings", R"({"__metadata__":{"a":1}})", "", own, "not a string"},
      {"metadata not an object", R"({"__metadata__":"x"})", "", own, "__metadata__"},
      {"deep nesting", deep, "", own, "nests deeper"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string p = write_raw("bad.safetensors", c.header, c.data, c.length);
    expect_invalid([&] { SafetensorsReader r(p); }, p, c.part);
  }
  // Files too short even for the length.
  std::ofstream(path("empty.safetensors"), std::ios::binary) << "";
  expect_invalid([&] { SafetensorsReader r(path("empty.safetensors")); }, "empty.safetensors",
                 "too short");
  std::ofstream(path("short.safetensors"), std::ios::binary) << "abc";
  expect_invalid([&] { SafetensorsReader r(path("short.safetensors")); }, "short.safetensors",
                 "too short");
  expect_invalid([&] { SafetensorsReader r(path("absent.safetensors")); }, "absent.safetensors",
                 "cannot open");
  expect_invalid([&] { SafetensorsReader r(dir_); }, dir_, "not a regular file");
}

TEST_F(Safetensors, ErrorsNeverEchoTheWholeHeader) {
  // A long invalid header: the message locates the fault, it does not quote it.
  const std::string junk = "{\"" + std::string(100000, 'x') + "\": nope}";
  const std::string p = write_raw("junk.safetensors", junk, "");
  try {
    SafetensorsReader r(p);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_LT(std::string(e.what()).size(), 400u) << e.what();
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
  // A long tensor name in an otherwise checked entry is shortened.
  const std::string name(5000, 'n');
  const std::string bad = "{\"" + name + R"(":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
  const std::string q = write_raw("longname.safetensors", bad, std::string(8, '\0'));
  try {
    SafetensorsReader r(q);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_LT(std::string(e.what()).size(), 600u) << e.what();
  }
}

TEST_F(Safetensors, LoadNamesTheFileAndTheTensor) {
  const std::string p = path("model.safetensors");
  save_safetensors(p, {{"lm_head.weight", filled({256, 64}, 0.0f)}});
  SafetensorsReader r(p);
  expect_invalid(
      [&] {
        r.load_f32("lm_head.weight", {256, 32});
      },
      p, "lm_head.weight has shape [256,64], expected [256,32]");
  expect_invalid([&] { r.load_f32("model.norm.weight"); }, p, "no tensor model.norm.weight");
  expect_invalid([&] { r.load_f32("model.norm.weight", {64}); }, p, "model.norm.weight");
  expect_invalid([&] { r.shape("nope"); }, p, "nope");
  expect_invalid([&] { r.dtype("nope"); }, p, "nope");

  // Another dtype is named, not reinterpreted.
  const std::string q =
      write_raw("ints.safetensors", R"({"i":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
                std::string(8, '\0'));
  SafetensorsReader ri(q);
  EXPECT_EQ(ri.dtype("i"), "I32");
  expect_invalid([&] { ri.load_f32("i"); }, q, "I32");
  // More dimensions than epx::Tensor holds: readable header, refused load.
  const std::string five = write_raw(
      "five.safetensors", R"({"t":{"dtype":"F32","shape":[1,1,1,1,1],"data_offsets":[0,4]}})",
      std::string(4, '\0'));
  SafetensorsReader r5(five);
  expect_invalid([&] { r5.load_f32("t"); }, five, "dimensions");
}

TEST_F(Safetensors, SaveRefusesBadInputNamingThePath) {
  const std::string p = path("out.safetensors");
  expect_invalid([&] { save_safetensors(p, {{"a", Tensor::zeros({2}, DType::bf16)}}); }, p, "f32");
  expect_invalid([&] { save_safetensors(p, {{"a", Tensor()}}); }, p, "undefined");
  expect_invalid(
      [&] {
        save_safetensors(p, {{"a", filled({1}, 0)}, {"a", filled({1}, 0)}});
      },
      p, "twice");
  expect_invalid([&] { save_safetensors(p, {{"__metadata__", filled({1}, 0)}}); }, p, "reserved");
  expect_invalid([&] { save_safetensors(p, {{"", filled({1}, 0)}}); }, p, "reserved or empty");
  const std::string nodir = path("no/such/dir/x.safetensors");
  expect_invalid([&] { save_safetensors(nodir, {{"a", filled({1}, 0)}}); }, nodir, "cannot create");
  EXPECT_TRUE(files().empty());
}

}  // namespace
}  // namespace epx::model
