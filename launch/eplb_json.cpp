#include "launch/eplb_json.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
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

// The format nests 3 deep ({"weight": [[n]]}); a little slack for files that
// wrap it. Deeper input is refused while parsing: a document 100000 arrays
// deep would overflow the stack later (dump, or a recursive walk).
constexpr int kMaxDepth = 8;
struct TooDeep {};

// Parser messages can quote what they read; the input is not ours to print
// whole, so they are cut.
std::string clipped(std::string s, std::size_t most = 160) {
  if (s.size() > most) s = s.substr(0, most) + "...";
  return s;
}

// One load, checked as given: an integer beyond i64 (18446744073709551615
// would wrap to -1) or a number beyond f32 (1e308 would become inf) is
// refused with the text of the number, not with what it would turn into.
void check_load(const json& x, std::size_t l, std::size_t e, bool integers) {
  const std::string where = "weight[" + std::to_string(l) + "][" + std::to_string(e) + "]";
  if (!x.is_number()) bad_input(where + " is " + x.type_name() + ", not a number");
  const std::string given = clipped(x.dump(), 40);  // a number: short
  if (x.is_number_unsigned() && x.get<std::uint64_t>() > std::uint64_t(INT64_MAX))
    bad_input(where + " = " + given + ", beyond the largest load " + std::to_string(INT64_MAX));
  // Negative loads are the balancer's to refuse (it names them as given).
  if (!integers && std::fabs(x.get<double>()) > double(std::numeric_limits<float>::max()))
    bad_input(where + " = " + given + ", beyond f32's largest " +
              json(std::numeric_limits<float>::max()).dump() +
              " (rows with fractions are read as f32)");
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
    doc = json::parse(text, [](int depth, json::parse_event_t, json&) {
      if (depth > kMaxDepth) throw TooDeep{};
      return true;
    });
  } catch (const TooDeep&) {
    bad_input("nested deeper than " + std::to_string(kMaxDepth) + " levels");
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for a number beyond double (1e309).
    bad_input(std::string("not JSON (") + clipped(e.what()) + ")");
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
        bad_input("weight[" + std::to_string(l) + "][" + std::to_string(e) + "] is " +
                  row[e].type_name() + ", not a number");
      integers = integers && row[e].is_number_integer();
    }
  }
  for (std::size_t l = 0; l < weight.size(); ++l)
    for (std::size_t e = 0; e < experts; ++e) check_load(weight[l][e], l, e, integers);
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
