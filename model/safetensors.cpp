#include "model/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/check.hpp"

namespace epx::model {

namespace {

// Headers past this size are not safetensors files we wrote or want to read.
constexpr std::uint64_t kMaxHeaderBytes = std::uint64_t{100} << 20;
constexpr int kMaxJsonDepth = 8;

std::size_t element_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2")
    return 1;
  return 0;
}

std::string shape_text(const std::vector<std::int64_t>& s) {
  std::string t = "[";
  for (std::size_t i = 0; i < s.size(); ++i) t += (i ? "," : "") + std::to_string(s[i]);
  return t + "]";
}

}  // namespace

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    EPX_CHECK(t.dtype() == DType::f32 && t.device() == Device::cpu, InvalidArgument,
              "save_safetensors: ", name, " is ", t.describe(), ", expected f32 on the host");
    EPX_CHECK(!header.contains(name) && name != "__metadata__", InvalidArgument,
              "save_safetensors: tensor name '", name, "' given twice");
    header[name] = {{"dtype", "F32"}, {"shape", t.shape()}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    EPX_CHECK(out.good(), InvalidArgument, "save_safetensors: cannot create ", tmp);
    std::uint64_t n = text.size();
    unsigned char le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(le), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& [name, t] : tensors)
      out.write(static_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
    out.flush();
    EPX_CHECK(out.good(), InvalidArgument, "save_safetensors: writing ", tmp, " failed (disk full?)");
  }
  const int fd = ::open(tmp.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  EPX_CHECK(!ec, InvalidArgument, "save_safetensors: renaming ", tmp, " to ", path, ": ", ec.message());
}

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary);
  EPX_CHECK(in.good(), InvalidArgument, path, ": cannot be opened");
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<std::uint64_t>(in.tellg());
  in.seekg(0);
  unsigned char le[8] = {};
  in.read(reinterpret_cast<char*>(le), 8);
  EPX_CHECK(in.good() && file_size >= 8, InvalidArgument, path, ": ", file_size,
            " bytes, too short for a safetensors file");
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= std::uint64_t{le[i]} << (8 * i);
  EPX_CHECK(n <= file_size - 8 && n <= kMaxHeaderBytes, InvalidArgument, path,
            ": header length ", n, " does not fit the file's ", file_size, " bytes");
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  data_start_ = 8 + n;
  const std::uint64_t data_bytes = file_size - data_start_;

  // Parse with a depth limit: a header is two levels deep; nesting past that
  // is refused before it can exhaust the stack.
  int depth = 0;
  bool too_deep = false;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(
        text, [&](int d, nlohmann::json::parse_event_t event, nlohmann::json&) {
          if (event == nlohmann::json::parse_event_t::object_start ||
              event == nlohmann::json::parse_event_t::array_start) {
            depth = d;
            if (d > kMaxJsonDepth) too_deep = true;
          }
          return !too_deep;
        });
  } catch (const std::exception& e) {
    EPX_THROW(InvalidArgument, path, ": the header is not valid JSON (", e.what(), ")");
  }
  EPX_CHECK(!too_deep, InvalidArgument, path, ": the header nests deeper than ", kMaxJsonDepth, " levels");
  EPX_CHECK(header.is_object(), InvalidArgument, path, ": the header is not a JSON object");

  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      EPX_CHECK(v.is_object(), InvalidArgument, path, ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        EPX_CHECK(m.value().is_string(), InvalidArgument, path, ": __metadata__ value of '",
                  m.key(), "' is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const bool well_formed = v.is_object() && v.contains("dtype") && v["dtype"].is_string() &&
                             v.contains("shape") && v["shape"].is_array() &&
                             v.contains("data_offsets") && v["data_offsets"].is_array() &&
                             v["data_offsets"].size() == 2 && v["data_offsets"][0].is_number_unsigned() &&
                             v["data_offsets"][1].is_number_unsigned();
    EPX_CHECK(well_formed, InvalidArgument, path, ": tensor '", name,
              "' needs dtype, shape and two data_offsets");
    Entry e;
    e.dtype = v["dtype"].get<std::string>();
    std::uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      EPX_CHECK(d.is_number_unsigned() && d.get<std::uint64_t>() < (std::uint64_t{1} << 40),
                InvalidArgument, path, ": tensor '", name, "' has a bad dimension");
      e.shape.push_back(d.get<std::int64_t>());
      numel *= d.get<std::uint64_t>();
    }
    e.begin = v["data_offsets"][0].get<std::uint64_t>();
    e.end = v["data_offsets"][1].get<std::uint64_t>();
    const std::size_t es = element_size(e.dtype);
    EPX_CHECK(es > 0, InvalidArgument, path, ": tensor '", name, "' has unknown dtype ", e.dtype);
    EPX_CHECK(e.begin <= e.end && e.end <= data_bytes, InvalidArgument, path, ": tensor '", name,
              "' data_offsets [", e.begin, ", ", e.end, ") are outside the ", data_bytes,
              " data bytes");
    EPX_CHECK(e.end - e.begin == numel * es, InvalidArgument, path, ": tensor '", name, "' has ",
              e.end - e.begin, " bytes, expected ", numel * es, " for ", e.dtype, " ",
              shape_text(e.shape));
    if (e.end > e.begin) ranges.emplace_back(e.begin, e.end);
    entries_[name] = std::move(e);
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i)
    EPX_CHECK(ranges[i].first >= ranges[i - 1].second, InvalidArgument, path,
              ": two tensors overlap at data byte ", ranges[i].first);
}

bool SafetensorsReader::contains(const std::string& name) const { return entries_.count(name) > 0; }

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> n;
  for (const auto& [k, v] : entries_) n.push_back(k);
  return n;
}

std::vector<std::int64_t> SafetensorsReader::shape(const std::string& name) const {
  const auto it = entries_.find(name);
  EPX_CHECK(it != entries_.end(), InvalidArgument, path_, ": no tensor '", name, "'");
  return it->second.shape;
}

std::string SafetensorsReader::dtype(const std::string& name) const {
  const auto it = entries_.find(name);
  EPX_CHECK(it != entries_.end(), InvalidArgument, path_, ": no tensor '", name, "'");
  return it->second.dtype;
}

Tensor SafetensorsReader::load_f32(const std::string& name) const {
  const auto it = entries_.find(name);
  EPX_CHECK(it != entries_.end(), InvalidArgument, path_, ": no tensor '", name, "'");
  const Entry& e = it->second;
  EPX_CHECK(e.dtype == "F32" || e.dtype == "BF16", InvalidArgument, path_, ": tensor '", name,
            "' is ", e.dtype, ", expected F32 or BF16");
  std::ifstream in(path_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(data_start_ + e.begin));
  std::vector<char> bytes(e.end - e.begin);
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  EPX_CHECK(in.good() || bytes.empty(), InvalidArgument, path_, ": reading tensor '", name, "' failed");
  Tensor t = Tensor::empty(e.shape, DType::f32);
  float* out = t.data<float>();
  if (e.dtype == "F32") {
    std::memcpy(out, bytes.data(), bytes.size());
  } else {
    for (std::size_t i = 0; i < bytes.size() / 2; ++i) {
      const std::uint32_t lo = static_cast<unsigned char>(bytes[2 * i]);
      const std::uint32_t hi = static_cast<unsigned char>(bytes[2 * i + 1]);
      const std::uint32_t bits = (lo | (hi << 8)) << 16;  // bf16 is the top half of an f32
      std::memcpy(out + i, &bits, 4);
    }
  }
  return t;
}

Tensor SafetensorsReader::load_f32(const std::string& name,
                                   const std::vector<std::int64_t>& expected_shape) const {
  const std::vector<std::int64_t> s = shape(name);
  EPX_CHECK(s == expected_shape, InvalidArgument, path_, ": ", name, " has shape ", shape_text(s),
            ", expected ", shape_text(expected_shape));
  return load_f32(name);
}

}  // namespace epx::model
