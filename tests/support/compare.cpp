#include "tests/support/compare.hpp"

#include <cstdint>
#include <cstring>
#include <iomanip>
#include <sstream>

namespace epx::test {

namespace {

std::string element_text(const Tensor& t, std::int64_t index) {
  std::ostringstream os;
  const std::size_t size = dtype_size(t.dtype());
  const auto* p =
      static_cast<const unsigned char*>(t.raw()) + static_cast<std::size_t>(index) * size;
  std::uint64_t bits = 0;
  std::memcpy(&bits, p, size);  // little-endian: the element's bits
  switch (t.dtype()) {
    case DType::i64:
      os << static_cast<std::int64_t>(bits);
      break;
    case DType::i32:
      os << static_cast<std::int32_t>(bits);
      break;
    case DType::f32: {
      float f;
      std::memcpy(&f, p, sizeof(f));
      os << std::setprecision(9) << f << " (0x" << std::hex << bits << ")";
      break;
    }
    default:
      os << "0x" << std::hex << std::setw(static_cast<int>(2 * size)) << std::setfill('0') << bits;
  }
  return os.str();
}

}  // namespace

std::string compare_tensors(const std::string& what, const Tensor& got, const Tensor& want,
                            const std::vector<RowOrigin>* origin) {
  if (got.defined() != want.defined() || got.dtype() != want.dtype() ||
      got.shape() != want.shape()) {
    return what + ": got " + (got.defined() ? got.describe() : std::string("nothing")) +
           ", expected " + (want.defined() ? want.describe() : std::string("nothing"));
  }
  if (!got.defined() || got.numel() == 0) return "";
  const std::int64_t rows = got.ndim() == 0 ? 1 : got.dim(0);
  const std::size_t row_bytes = got.nbytes() / static_cast<std::size_t>(rows);
  const auto* a = static_cast<const unsigned char*>(got.raw());
  const auto* b = static_cast<const unsigned char*>(want.raw());
  if (std::memcmp(a, b, got.nbytes()) == 0) return "";
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::size_t off = static_cast<std::size_t>(r) * row_bytes;
    if (std::memcmp(a + off, b + off, row_bytes) == 0) continue;
    const std::size_t size = dtype_size(got.dtype());
    std::size_t e = 0;
    while (std::memcmp(a + off + e * size, b + off + e * size, size) == 0) ++e;
    const std::int64_t index = static_cast<std::int64_t>(off / size + e);
    std::ostringstream os;
    os << what << ": row " << r;
    if (origin != nullptr && r < static_cast<std::int64_t>(origin->size()))
      os << " (from rank " << (*origin)[r].rank << ", token " << (*origin)[r].token << ")";
    os << ", element " << e << ": got " << element_text(got, index) << ", expected "
       << element_text(want, index);
    return os.str();
  }
  return "";
}

std::string compare_counts(const std::string& what, const std::vector<int>& got,
                           const std::vector<int>& want) {
  if (got.size() != want.size())
    return what + ": got " + std::to_string(got.size()) + " entries, expected " +
           std::to_string(want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i])
      return what + "[" + std::to_string(i) + "]: got " + std::to_string(got[i]) + ", expected " +
             std::to_string(want[i]);
  }
  return "";
}

std::string first_error(std::initializer_list<std::string> messages) {
  for (const std::string& m : messages) {
    if (!m.empty()) return m;
  }
  return "";
}

}  // namespace epx::test
