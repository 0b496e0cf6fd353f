// Loading a Model's weights from a safetensors file with DeepSeek-V3's HF
// names (an epx-train checkpoint's model.safetensors or an exported file):
// the dense parameters, the routed experts this rank holds (logical names,
// so any EP size reads any file) and the selection bias buffers.
#pragma once

#include <string>

#include "model/model.hpp"

namespace epx::model {

// Throws InvalidArgument naming the file and the tensor for a missing tensor,
// a wrong shape or an unsupported dtype. A file without a bias buffer leaves
// that layer's bias at 0 (an outside file may lack it).
void load_weights(Model& model, const std::string& path);

}  // namespace epx::model
