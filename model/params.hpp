// Parameters as named tensors in one flat allocation per group (llm.c's
// layout): values, gradients and the AdamW moments of a group are each one
// contiguous array, so a group's gradient all-reduce, norm, clipping and
// optimizer step are loops over one array, and a checkpoint is a walk over
// the names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <epx/tensor.hpp>

namespace epx::model {

struct ParamInfo {
  std::string name;  // DeepSeek-V3's HF name, e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<std::int64_t> shape;
  std::int64_t offset = 0;  // in floats, into the group's arrays
  std::int64_t numel = 0;
  bool decay = false;  // AdamW weight decay: 2-D tensors only
};

class ParamStore {
 public:
  // Declares a parameter; returns its index. Only before allocate().
  int add(std::string name, std::vector<std::int64_t> shape);
  // Allocates values (uninitialised), grads and moments (zero).
  void allocate();

  const std::vector<ParamInfo>& params() const noexcept { return params_; }
  const ParamInfo& info(int i) const { return params_.at(static_cast<std::size_t>(i)); }
  int find(const std::string& name) const;  // -1 if absent
  std::int64_t size() const noexcept { return size_; }

  float* value(int i) { return values.data() + info(i).offset; }
  const float* value(int i) const { return values.data() + info(i).offset; }
  float* grad(int i) { return grads.data() + info(i).offset; }
  // A tensor viewing parameter i's values (or another array of the group's layout).
  Tensor view(int i, std::vector<float>& array);

  void zero_grads();

  std::vector<float> values, grads, exp_avg, exp_avg_sq;

 private:
  std::vector<ParamInfo> params_;
  std::int64_t size_ = 0;
  bool allocated_ = false;
};

// Deterministic initialisation, independent of the grid: parameter `name`
// draws from its own stream keyed by (seed, name). normal(0, std): stream =
// splitmix64 seeded with seed ^ fnv1a64(name); each pair of values comes from
// two uniforms u1, u2 in (0, 1] (53-bit) by Box-Muller in double,
// z0 = r cos(2 pi u2), z1 = r sin(2 pi u2), r = sqrt(-2 ln u1), then
// std * z rounded to f32.
void init_normal(float* out, std::int64_t n, std::uint64_t seed, const std::string& name,
                 double std);

}  // namespace epx::model
