#include "model/params.hpp"

#include <cmath>
#include <numbers>
#include <utility>

#include "core/check.hpp"

namespace epx::model {

int ParamStore::add(std::string name, std::vector<std::int64_t> shape) {
  EPX_CHECK(!allocated_, Internal, "ParamStore::add(", name, ") after allocate()");
  EPX_CHECK(find(name) < 0, Internal, "ParamStore: parameter ", name, " declared twice");
  ParamInfo p;
  p.name = std::move(name);
  p.numel = 1;
  for (const std::int64_t d : shape) p.numel *= d;
  p.shape = std::move(shape);
  p.decay = p.shape.size() == 2;
  p.offset = size_;
  size_ += p.numel;
  params_.push_back(std::move(p));
  return static_cast<int>(params_.size()) - 1;
}

void ParamStore::allocate() {
  const auto n = static_cast<std::size_t>(size_);
  values.assign(n, 0.0f);
  grads.assign(n, 0.0f);
  exp_avg.assign(n, 0.0f);
  exp_avg_sq.assign(n, 0.0f);
  allocated_ = true;
}

int ParamStore::find(const std::string& name) const {
  for (std::size_t i = 0; i < params_.size(); ++i)
    if (params_[i].name == name) return static_cast<int>(i);
  return -1;
}

Tensor ParamStore::view(int i, std::vector<float>& array) {
  const ParamInfo& p = info(i);
  return Tensor::wrap(array.data() + p.offset, p.shape, DType::f32);
}

void ParamStore::zero_grads() { std::fill(grads.begin(), grads.end(), 0.0f); }

namespace {

std::uint64_t fnv1a64(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in (0, 1]: 53 random bits, +1, so log() never sees 0.
double uniform_open0(std::uint64_t& state) {
  return static_cast<double>((splitmix64(state) >> 11) + 1) * 0x1.0p-53;
}

}  // namespace

void init_normal(float* out, std::int64_t n, std::uint64_t seed, const std::string& name,
                 double std) {
  std::uint64_t state = seed ^ fnv1a64(name);
  for (std::int64_t i = 0; i < n; i += 2) {
    const double u1 = uniform_open0(state);
    const double u2 = uniform_open0(state);
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double a = 2.0 * std::numbers::pi * u2;
    out[i] = static_cast<float>(std * r * std::cos(a));
    if (i + 1 < n) out[i + 1] = static_cast<float>(std * r * std::sin(a));
  }
}

}  // namespace epx::model
