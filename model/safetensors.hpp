// safetensors files (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON
//   {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// (padded with spaces to a multiple of 8), then the raw little-endian data.
// epx writes F32; it reads F32 and BF16 (widened to f32 exactly).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <epx/tensor.hpp>

namespace epx::model {

// Writes `tensors` (f32, host, in the order given; names unique) to `path`
// (through a temporary file renamed into place, so a crash leaves no torn
// file). Throws epx::Error naming the path on any I/O failure.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// A file opened for reading: the header is parsed and checked (offsets in
// range, no overlap, sizes matching dtype x shape) on open.
class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path);  // throws InvalidArgument naming the path
  bool contains(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  std::vector<std::int64_t> shape(const std::string& name) const;
  std::string dtype(const std::string& name) const;  // "F32", "BF16", ...
  // The tensor as f32 (F32 copied, BF16 widened). Throws InvalidArgument for a
  // missing name or another dtype, naming the file and the tensor.
  Tensor load_f32(const std::string& name) const;
  // As load_f32, and checks the shape: "model.safetensors: lm_head.weight has
  // shape [256,64], expected [256,32]".
  Tensor load_f32(const std::string& name, const std::vector<std::int64_t>& expected_shape) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

 private:
  struct Entry {
    std::string dtype;
    std::vector<std::int64_t> shape;
    std::uint64_t begin = 0, end = 0;  // offsets in the data section
  };
  std::string path_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
  std::uint64_t data_start_ = 0;
};

}  // namespace epx::model
