#include "model/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "core/file_io.hpp"

namespace epx::model {
namespace {

// The format is little-endian on disk; epx copies tensor bytes as they are.
static_assert(std::endian::native == std::endian::little,
              "safetensors I/O assumes a little-endian host");

// HF's reader refuses headers above 100 MB; a larger length is a corrupt file.
constexpr std::uint64_t kMaxHeaderBytes = 100u << 20;
// Root object, tensor entry, shape / data_offsets array: 3 levels. Deeper
// input is not a safetensors header, and refusing it early keeps a hostile
// file from costing recursion or memory.
constexpr int kMaxJsonDepth = 3;

struct DepthExceeded {};

using core::errno_text;
using core::Fd;

// The element size of a safetensors dtype name, 0 for an unknown one.
std::size_t element_size(const std::string& dtype) {
  static const std::pair<const char*, std::size_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8}};
  for (const auto& [name, size] : kSizes)
    if (dtype == name) return size;
  return 0;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// A name from the file, shortened and made printable: error messages must not
// carry a whole hostile header or control characters.
std::string printable(const std::string& s, std::size_t max_len = 80) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max_len; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  if (s.size() > max_len) out += "...";
  return out;
}

// Reads exactly n bytes at `offset`; false when the file is shorter.
bool read_at(int fd, void* data, std::size_t n, std::uint64_t offset) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r =
        ::pread(fd, p, std::min<std::size_t>(n, std::size_t{1} << 30), static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
    offset += static_cast<std::uint64_t>(r);
  }
  return true;
}


}  // namespace

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the header in the order given (metadata first, as HF
  // writes it), so the file is the same bytes for the same input.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::set<std::string> seen;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    EPX_CHECK(!name.empty() && name != "__metadata__", InvalidArgument, "save_safetensors: ", path,
              ": tensor name '", name, "' is reserved or empty");
    EPX_CHECK(seen.insert(name).second, InvalidArgument, "save_safetensors: ", path, ": tensor ",
              name, " given twice");
    EPX_CHECK(t.defined(), InvalidArgument, "save_safetensors: ", path, ": tensor ", name,
              " is undefined");
    EPX_CHECK(t.dtype() == DType::f32 && t.device() == Device::cpu, InvalidArgument,
              "save_safetensors: ", path, ": tensor ", name, " is ", t.describe(),
              ", expected f32 on the cpu");
    const std::uint64_t end = offset + t.nbytes();
    header[name] = {{"dtype", "F32"}, {"shape", t.shape()}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text = header.dump();
  // Padding to 8 bytes keeps the data section aligned for readers that map it.
  text.append((8 - text.size() % 8) % 8, ' ');

  unsigned char len[8];
  const std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  std::vector<std::pair<const void*, std::size_t>> pieces{{len, 8}, {text.data(), text.size()}};
  for (const auto& [name, t] : tensors) pieces.emplace_back(t.raw(), t.nbytes());
  core::write_file_atomically(path, pieces, "save_safetensors");
}

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  EPX_CHECK(fd.get() >= 0, InvalidArgument, path, ": cannot open: ", errno_text());
  struct stat st {};
  EPX_CHECK(::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode), InvalidArgument, path,
            ": not a regular file");
  const auto file_size = static_cast<std::uint64_t>(st.st_size);
  EPX_CHECK(file_size >= 8, InvalidArgument, path, ": ", file_size,
            " bytes, too short for a safetensors file (8-byte header length first)");
  unsigned char len[8];
  EPX_CHECK(read_at(fd.get(), len, 8, 0), InvalidArgument, path, ": cannot read the header length");
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= std::uint64_t{len[i]} << (8 * i);
  EPX_CHECK(n >= 2 && n <= kMaxHeaderBytes && n <= file_size - 8, InvalidArgument, path,
            ": header length ", n, " is not in [2, min(", kMaxHeaderBytes, ", file size ",
            file_size, " - 8)]: not a safetensors file, or a truncated one");
  std::string text(n, '\0');
  EPX_CHECK(read_at(fd.get(), text.data(), n, 8), InvalidArgument, path, ": cannot read the ", n,
            "-byte header");
  data_start_ = 8 + n;
  const std::uint64_t data_size = file_size - data_start_;

  nlohmann::json header;
  try {
    header =
        nlohmann::json::parse(text, [](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
          if (depth > kMaxJsonDepth) throw DepthExceeded{};
          return true;
        });
  } catch (const DepthExceeded&) {
    EPX_THROW(InvalidArgument, path, ": header JSON nests deeper than ", kMaxJsonDepth,
              " levels: not a safetensors header");
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte locates the fault without echoing the (untrusted) header.
    EPX_THROW(InvalidArgument, path, ": header is not valid JSON (at byte ", e.byte, " of ", n,
              ")");
  }
  EPX_CHECK(header.is_object(), InvalidArgument, path, ": header is not a JSON object");

  // (begin, end, name) of every tensor, to check that they tile the data section.
  std::vector<std::tuple<std::uint64_t, std::uint64_t, std::string>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const std::string shown = printable(name);
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      EPX_CHECK(v.is_object(), InvalidArgument, path, ": __metadata__ is not a JSON object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        EPX_CHECK(m.value().is_string(), InvalidArgument, path, ": __metadata__[",
                  printable(m.key()), "] is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    EPX_CHECK(v.is_object(), InvalidArgument, path, ": tensor ", shown, " is not a JSON object");
    EPX_CHECK(v.contains("dtype") && v["dtype"].is_string(), InvalidArgument, path, ": tensor ",
              shown, " has no string \"dtype\"");
    EPX_CHECK(v.contains("shape") && v["shape"].is_array(), InvalidArgument, path, ": tensor ",
              shown, " has no array \"shape\"");
    EPX_CHECK(
        v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2,
        InvalidArgument, path, ": tensor ", shown, " has no [begin, end] \"data_offsets\"");
    Entry e;
    e.dtype = v["dtype"].get<std::string>();
    const std::size_t esize = element_size(e.dtype);
    EPX_CHECK(esize > 0, InvalidArgument, path, ": tensor ", shown, " has unknown dtype ",
              printable(e.dtype, 16));
    // numel and its byte count, refusing anything that overflows 64 bits.
    std::uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : v["shape"]) {
      EPX_CHECK(d.is_number_unsigned(), InvalidArgument, path, ": tensor ", shown,
                ": shape entries must be non-negative integers");
      const std::uint64_t dim = d.get<std::uint64_t>();
      EPX_CHECK(dim <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()),
                InvalidArgument, path, ": tensor ", shown, ": shape entry ", dim, " is too large");
      if (dim != 0 && numel > std::numeric_limits<std::uint64_t>::max() / dim) overflow = true;
      numel *= dim;
      e.shape.push_back(static_cast<std::int64_t>(dim));
    }
    if (numel > std::numeric_limits<std::uint64_t>::max() / esize) overflow = true;
    EPX_CHECK(!overflow, InvalidArgument, path, ": tensor ", shown, " shape ", shape_text(e.shape),
              " overflows 64 bits");
    const auto& off = v["data_offsets"];
    EPX_CHECK(off[0].is_number_unsigned() && off[1].is_number_unsigned(), InvalidArgument, path,
              ": tensor ", shown, ": data_offsets must be non-negative integers");
    e.begin = off[0].get<std::uint64_t>();
    e.end = off[1].get<std::uint64_t>();
    EPX_CHECK(e.begin <= e.end && e.end <= data_size, InvalidArgument, path, ": tensor ", shown,
              " data_offsets [", e.begin, ", ", e.end, "] out of range of the ", data_size,
              "-byte data section");
    EPX_CHECK(e.end - e.begin == numel * esize, InvalidArgument, path, ": tensor ", shown, " has ",
              e.end - e.begin, " bytes, expected ", numel * esize, " (", e.dtype, " x shape ",
              shape_text(e.shape), ")");
    spans.emplace_back(e.begin, e.end, name);
    entries_.emplace(name, std::move(e));
  }
  // As HF's reader: the tensors tile the data section exactly, which rules out
  // overlaps (two names aliasing bytes) and unaccounted bytes.
  std::sort(spans.begin(), spans.end());
  std::uint64_t at = 0;
  for (const auto& [begin, end, name] : spans) {
    EPX_CHECK(begin >= at, InvalidArgument, path, ": tensor ", printable(name), " [", begin, ", ",
              end, "] overlaps the previous tensor (which ends at ", at, ")");
    EPX_CHECK(begin == at, InvalidArgument, path, ": gap of ", begin - at, " bytes before tensor ",
              printable(name), " at data offset ", at);
    at = end;
  }
  EPX_CHECK(at == data_size, InvalidArgument, path, ": the tensors cover ", at, " of the ",
            data_size, " data bytes");
}

bool SafetensorsReader::contains(const std::string& name) const {
  return entries_.count(name) != 0;
}

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;  // std::map: already sorted
}

std::vector<std::int64_t> SafetensorsReader::shape(const std::string& name) const {
  auto it = entries_.find(name);
  EPX_CHECK(it != entries_.end(), InvalidArgument, path_, ": no tensor ", name);
  return it->second.shape;
}

std::string SafetensorsReader::dtype(const std::string& name) const {
  auto it = entries_.find(name);
  EPX_CHECK(it != entries_.end(), InvalidArgument, path_, ": no tensor ", name);
  return it->second.dtype;
}

Tensor SafetensorsReader::load_f32(const std::string& name) const {
  auto it = entries_.find(name);
  EPX_CHECK(it != entries_.end(), InvalidArgument, path_, ": no tensor ", name);
  const Entry& e = it->second;
  EPX_CHECK(e.dtype == "F32" || e.dtype == "BF16", InvalidArgument, path_, ": ", name,
            " has dtype ", e.dtype, ", expected F32 or BF16");
  EPX_CHECK(e.shape.size() <= static_cast<std::size_t>(Tensor::kMaxDims), InvalidArgument, path_,
            ": ", name, " has shape ", shape_text(e.shape), ", more than ", Tensor::kMaxDims,
            " dimensions");
  Tensor t = Tensor::empty(e.shape, DType::f32);
  const std::size_t bytes = e.end - e.begin;
  Fd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  EPX_CHECK(fd.get() >= 0, InvalidArgument, path_, ": cannot open: ", errno_text());
  if (e.dtype == "F32") {
    EPX_CHECK(read_at(fd.get(), t.raw(), bytes, data_start_ + e.begin), InvalidArgument, path_,
              ": cannot read ", name, " (file changed or truncated since it was opened?)");
  } else {
    std::vector<std::uint16_t> raw(static_cast<std::size_t>(t.numel()));
    EPX_CHECK(read_at(fd.get(), raw.data(), bytes, data_start_ + e.begin), InvalidArgument, path_,
              ": cannot read ", name, " (file changed or truncated since it was opened?)");
    // bf16 is the top half of an f32: widening is exact.
    float* out = t.data<float>();
    for (std::size_t i = 0; i < raw.size(); ++i)
      out[i] = std::bit_cast<float>(static_cast<std::uint32_t>(raw[i]) << 16);
  }
  return t;
}

Tensor SafetensorsReader::load_f32(const std::string& name,
                                   const std::vector<std::int64_t>& expected_shape) const {
  // The shape first: a mismatch is the common error and needs no read.
  const std::vector<std::int64_t> have = shape(name);
  EPX_CHECK(have == expected_shape, InvalidArgument, path_, ": ", name, " has shape ",
            shape_text(have), ", expected ", shape_text(expected_shape));
  return load_f32(name);
}

}  // namespace epx::model
