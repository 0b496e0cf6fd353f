#include "launch/eplb_json.hpp"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <vector>

namespace epx::launch {

namespace {

using nlohmann::json;

[[noreturn]] void bad_input(const std::string& what) {
  throw std::runtime_error("input: " + what +
                           ", expected {\"weight\": [[numbers per expert], ...]}");
}

// Nested arrays of a row-major i64 tensor of 2 or 3 dims.
json nested(const Tensor& t) {
  const std::int64_t* v = t.data<std::int64_t>();
  const std::int64_t inner = t.dim(-1);
  json rows = json::array();
  for (std::int64_t r = 0; r < t.numel() / inner; ++r)
    rows.push_back(std::vector<std::int64_t>(v + r * inner, v + (r + 1) * inner));
  if (t.ndim() == 2) return rows;
  json out = json::array();
  for (std::int64_t l = 0; l < t.dim(0); ++l) {
    json layer = json::array();
    for (std::int64_t e = 0; e < t.dim(1); ++e) layer.push_back(rows[l * t.dim(1) + e]);
    out.push_back(layer);
  }
  return out;
}

}  // namespace

Tensor parse_load_json(const std::string& text) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    bad_input(std::string("not JSON (") + e.what() + ")");
  }
  if (!doc.is_object() || !doc.contains("weight")) bad_input("no \"weight\" key");
  const json& weight = doc["weight"];
  if (!weight.is_array() || weight.empty()) bad_input("\"weight\" is not a non-empty array");
  const std::size_t experts = weight[0].is_array() ? weight[0].size() : 0;
  bool integers = true;
  for (std::size_t l = 0; l < weight.size(); ++l) {
    const json& row = weight[l];
    if (!row.is_array() || row.size() != experts || experts == 0)
      bad_input("weight[" + std::to_string(l) + "] is not an array of " +
                std::to_string(experts == 0 ? 1 : experts) + "+ numbers like weight[0]");
    for (std::size_t e = 0; e < experts; ++e) {
      if (!row[e].is_number())
        bad_input("weight[" + std::to_string(l) + "][" + std::to_string(e) +
                  "] = " + row[e].dump() + " is not a number");
      integers = integers && row[e].is_number_integer();
    }
  }
  const std::int64_t L = static_cast<std::int64_t>(weight.size());
  const std::int64_t E = static_cast<std::int64_t>(experts);
  Tensor load = Tensor::empty({L, E}, integers ? DType::i64 : DType::f32);
  for (std::int64_t l = 0; l < L; ++l) {
    for (std::int64_t e = 0; e < E; ++e) {
      const json& x = weight[l][e];
      if (integers)
        load.data<std::int64_t>()[l * E + e] = x.get<std::int64_t>();
      else
        load.data<float>()[l * E + e] = x.get<float>();
    }
  }
  return load;
}

std::string placement_json(const balancer::Placement& placement,
                           const balancer::PlacementQuality& quality, balancer::Policy policy) {
  json out;
  out["phy2log"] = nested(placement.phy2log);
  out["log2phy"] = nested(placement.log2phy);
  out["logcnt"] = nested(placement.logcnt);
  out["gpu_max_over_mean"] = quality.gpu_max_over_mean;
  out["same_gpu_duplicates"] = quality.same_gpu_duplicates;
  out["policy"] = balancer::policy_name(policy);
  return out.dump() + "\n";
}

}  // namespace epx::launch
