// Loading a Model's weights from a safetensors file with DeepSeek-V3's HF
// names (an epx-train checkpoint's model.safetensors or an exported file):
// the dense parameters, the routed experts this rank holds (logical names,
// so any EP size reads any file) and the selection bias buffers.
#pragma once

#include <string>
#include <vector>

#include "model/model.hpp"
#include "model/safetensors.hpp"

namespace epx::model {

// Throws InvalidArgument naming the file and the tensor for a missing tensor,
// a wrong shape or an unsupported dtype. A file without a bias buffer leaves
// that layer's bias at 0 (an outside file may lack it).
void load_weights(Model& model, const std::string& path);
// The same from an open file; require_bias: a missing bias buffer is an
// error too (an epx checkpoint always has it).
void load_weights(Model& model, const SafetensorsReader& file, bool require_bias);
// One parameter `name` of the file into array[p.offset, p.offset + p.numel),
// checked against p's shape.
void load_param(const SafetensorsReader& file, const std::string& name, const ParamInfo& p,
                std::vector<float>& array);

}  // namespace epx::model
