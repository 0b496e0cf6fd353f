#include "train/config.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>
#include <epx/pipeline_tools.hpp>

#include "core/check.hpp"

namespace epx::train {
namespace {

// A config error is about the user's file, not a line of epx: no file:line
// suffix (it would always name this function).
[[noreturn]] void fail(const std::string& msg) {
  const std::string prefix = core::rank_prefix();
  throw Error(ErrorCode::InvalidArgument, (prefix.empty() ? "" : prefix + " ") + "config: " + msg);
}

// One YAML key: its C++ member, its type and the range it must lie in. The
// tables below are the single list of keys, so that parsing, the per-key
// checks and to_yaml() cannot disagree on a name.
enum class Kind { Int, UInt64, Double, String, Bool, IntList };

struct Range {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;  // true: the bound itself is excluded
};

struct Field {
  const char* key;
  Kind kind;
  void* (*ref)(Config&);               // the member this key sets
  Range range{};                       // Int / Double, IntList's every element
  std::vector<std::string> choices{};  // String: allowed values (empty: any)
};

struct Section {
  const char* name;
  std::vector<Field> fields;
};

// One key a line: the table reads as the list of keys it is.
// clang-format off
Range at_least(double lo) { return Range{lo}; }
Range above(double lo) { return Range{lo, std::numeric_limits<double>::infinity(), true}; }
Range unit_open() { return Range{0.0, 1.0, false, true}; }  // [0, 1)

#define EPX_KEY(sec, name, kind, ...) \
  Field { #name, Kind::kind, [](Config& c) -> void* { return &c.sec.name; }, __VA_ARGS__ }

const std::vector<Section>& sections() {
  static const std::vector<Section> kSections = {
      {"model",
       {EPX_KEY(model, vocab_size, Int, at_least(1)),
        EPX_KEY(model, hidden_size, Int, at_least(1)),
        EPX_KEY(model, num_layers, Int, at_least(1)),
        EPX_KEY(model, num_heads, Int, at_least(1)),
        EPX_KEY(model, intermediate_size, Int, at_least(1)),
        EPX_KEY(model, first_k_dense, Int, at_least(0)),
        EPX_KEY(model, num_experts, Int, at_least(1)),
        EPX_KEY(model, num_shared_experts, Int, at_least(0)),
        EPX_KEY(model, moe_intermediate_size, Int, at_least(1)),
        EPX_KEY(model, top_k, Int, at_least(1)),
        EPX_KEY(model, n_group, Int, at_least(1)),
        EPX_KEY(model, topk_group, Int, at_least(1)),
        EPX_KEY(model, score_function, String, {}, {"sigmoid", "softmax"}),
        EPX_KEY(model, routed_scaling_factor, Double, above(0)),
        EPX_KEY(model, bias_update_rate, Double, at_least(0)),
        EPX_KEY(model, rms_norm_eps, Double, above(0)),
        EPX_KEY(model, rope_theta, Double, above(0)),
        EPX_KEY(model, init_std, Double, above(0)),
        EPX_KEY(model, init_from, String)}},
      {"train",
       {EPX_KEY(train, seq_len, Int, at_least(1)),
        EPX_KEY(train, micro_batch_size, Int, at_least(1)),
        EPX_KEY(train, num_micro_batches, Int, at_least(1)),
        EPX_KEY(train, max_steps, Int, at_least(1)),
        EPX_KEY(train, lr, Double, at_least(0)),
        EPX_KEY(train, min_lr, Double, at_least(0)),
        EPX_KEY(train, warmup_steps, Int, at_least(0)),
        EPX_KEY(train, weight_decay, Double, at_least(0)),
        EPX_KEY(train, beta1, Double, unit_open()),
        EPX_KEY(train, beta2, Double, unit_open()),
        EPX_KEY(train, eps, Double, above(0)),
        EPX_KEY(train, grad_clip, Double, at_least(0)),
        EPX_KEY(train, seed, UInt64),
        EPX_KEY(train, eval_every, Int, at_least(0)),
        EPX_KEY(train, eval_batches, Int, at_least(0)),
        EPX_KEY(train, checkpoint_every, Int, at_least(0)),
        EPX_KEY(train, checkpoint_dir, String),
        EPX_KEY(train, threads, Int, at_least(1))}},
      {"data",
       {EPX_KEY(data, path, String),
        EPX_KEY(data, format, String, {}, {"bytes", "u16", "u32"}),
        EPX_KEY(data, val_fraction, Double, unit_open())}},
      {"parallel",
       {EPX_KEY(parallel, pp, Int, at_least(1)),
        EPX_KEY(parallel, schedule, String, {}, {"gpipe", "1f1b", "zb-h1", "dualpipe", "dualpipev", "auto"}),
        EPX_KEY(parallel, dp, Int, at_least(1)),
        EPX_KEY(parallel, ep, Int, at_least(1)),
        EPX_KEY(parallel, fp8_dispatch, Bool),
        EPX_KEY(parallel, layers_per_stage, IntList, at_least(1)),
        EPX_KEY(parallel, fb_overlap, Bool)}},
      {"balancer",
       {EPX_KEY(balancer, enabled, Bool),
        EPX_KEY(balancer, redundant_experts, Int, at_least(0)),
        EPX_KEY(balancer, every, Int, at_least(1)),
        EPX_KEY(balancer, window, Int, at_least(1)),
        EPX_KEY(balancer, policy, String, {}, {"balanced", "eplb", "incremental"}),
        EPX_KEY(balancer, max_migration, Double, Range{0.0, 1.0})}},
      {"log",
       {EPX_KEY(log, metrics, String),
        EPX_KEY(log, every, Int, at_least(1)),
        EPX_KEY(log, report, String),
        EPX_KEY(log, timeline, String),
        EPX_KEY(log, timeline_step, Int, at_least(1))}},
  };
  return kSections;
}

// clang-format on
#undef EPX_KEY

// The shortest text that reads back as the same double (to_yaml must
// round-trip), as a person writes it: 0.0003 rather than 3e-04, 1e-6 rather
// than 0.000001.
std::string number_text(double v) {
  char buf[400];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  // "1e-06" -> "1e-6": the padded exponent is to_chars's habit, not YAML's.
  const auto e = sci.find('e');
  if (e != std::string::npos) {
    std::size_t digits = e + 2;
    while (digits + 1 < sci.size() && sci[digits] == '0') sci.erase(digits, 1);
  }
  if (std::fabs(v) >= 1e16) return sci;
  r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  std::string fixed(buf, r.ptr);
  return fixed.size() <= sci.size() + 2 ? fixed : sci;
}

std::string range_text(const Range& r, Kind kind) {
  auto num = [&](double v) {
    return kind == Kind::Int ? std::to_string(static_cast<long long>(v)) : number_text(v);
  };
  const bool has_lo = std::isfinite(r.lo), has_hi = std::isfinite(r.hi);
  if (has_lo && has_hi)
    return std::string("in ") + (r.lo_open ? "(" : "[") + num(r.lo) + ", " + num(r.hi) +
           (r.hi_open ? ")" : "]");
  if (has_lo) return (r.lo_open ? "> " : ">= ") + num(r.lo);
  if (has_hi) return (r.hi_open ? "< " : "<= ") + num(r.hi);
  return "any value";
}

bool in_range(double v, const Range& r) {
  if (r.lo_open ? !(v > r.lo) : !(v >= r.lo)) return false;
  if (r.hi_open ? !(v < r.hi) : !(v <= r.hi)) return false;
  return true;
}

std::string joined(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) s += sep;
    s += v[i];
  }
  return s;
}

// A YAML value as the user wrote it, short enough for one error line.
std::string shown(const YAML::Node& node) {
  std::string s;
  if (node.IsNull()) return "null (empty)";
  if (node.IsScalar()) {
    s = node.Scalar();
    if (node.Tag() == "!") s = "\"" + s + "\"";
  } else {
    YAML::Emitter e;
    e << YAML::Flow << node;
    s = e.c_str();
  }
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  if (node.IsSequence()) s += " (a list)";
  if (node.IsMap()) s += " (a map)";
  return s;
}

// A quoted scalar ("64", '64') or one tagged !!str is a string to YAML, whatever it spells.
bool is_string_scalar(const YAML::Node& node) {
  return node.IsScalar() && (node.Tag() == "!" || node.Tag() == "tag:yaml.org,2002:str");
}

const char* kind_text(Kind kind) {
  switch (kind) {
    case Kind::Int:
      return "an integer";
    case Kind::UInt64:
      return "a non-negative integer";
    case Kind::Double:
      return "a number";
    case Kind::String:
      return "a string";
    case Kind::Bool:
      return "true or false";
    case Kind::IntList:
      return "a list of integers ([a, b, ...])";
  }
  return "?";
}

[[noreturn]] void wrong_type(const std::string& name, const YAML::Node& node, Kind kind) {
  fail(name + " = " + shown(node) + ", expected " + kind_text(kind));
}

// YAML plain integers in decimal: [-+]?[0-9]+.
bool parse_integer(const std::string& text, long long* out) {
  const char* b = text.data();
  const char* e = b + text.size();
  if (b != e && *b == '+') ++b;
  if (b == e || (*b == '-' && b + 1 == e)) return false;
  for (const char* p = (*b == '-') ? b + 1 : b; p != e; ++p)
    if (*p < '0' || *p > '9') return false;
  auto r = std::from_chars(b, e, *out);
  return r.ec == std::errc() && r.ptr == e;
}

bool parse_unsigned(const std::string& text, std::uint64_t* out, bool* overflow) {
  const char* b = text.data();
  const char* e = b + text.size();
  if (b != e && *b == '+') ++b;
  if (b == e) return false;
  for (const char* p = b; p != e; ++p)
    if (*p < '0' || *p > '9') return false;
  auto r = std::from_chars(b, e, *out);
  *overflow = r.ec == std::errc::result_out_of_range;
  return r.ec == std::errc() && r.ptr == e;
}

bool parse_double(const std::string& text, double* out) {
  const char* b = text.data();
  const char* e = b + text.size();
  if (b != e && *b == '+') ++b;
  if (b == e) return false;
  // from_chars also reads "inf" and "nan"; no key of the config takes them.
  for (const char* p = b; p != e; ++p)
    if (!((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' || *p == '-' ||
          *p == '+'))
      return false;
  auto r = std::from_chars(b, e, *out);
  return r.ec == std::errc() && r.ptr == e && std::isfinite(*out);
}

// The per-key check of a value already stored in `config`.
void check_value(const std::string& name, const Field& f, Config& config) {
  void* p = f.ref(config);
  switch (f.kind) {
    case Kind::Int: {
      const int v = *static_cast<int*>(p);
      if (!in_range(v, f.range))
        fail(name + " = " + std::to_string(v) + ", expected " + range_text(f.range, f.kind));
      break;
    }
    case Kind::Double: {
      const double v = *static_cast<double*>(p);
      if (!std::isfinite(v) || !in_range(v, f.range))
        fail(name + " = " + number_text(v) + ", expected " + range_text(f.range, f.kind));
      break;
    }
    case Kind::String: {
      const auto& v = *static_cast<std::string*>(p);
      if (!f.choices.empty() && std::find(f.choices.begin(), f.choices.end(), v) == f.choices.end())
        fail(name + " = " + v + ", expected one of " + joined(f.choices, ", "));
      break;
    }
    case Kind::IntList: {
      const auto& v = *static_cast<std::vector<int>*>(p);
      for (std::size_t i = 0; i < v.size(); ++i)
        if (!in_range(v[i], f.range))
          fail(name + "[" + std::to_string(i) + "] = " + std::to_string(v[i]) + ", expected " +
               range_text(f.range, Kind::Int));
      break;
    }
    case Kind::UInt64:
    case Kind::Bool:
      break;
  }
}

// YAML plain integer or a wrong-type error naming `name`.
int integer_or_fail(const std::string& name, const YAML::Node& node, Kind kind) {
  long long v = 0;
  if (!node.IsScalar() || is_string_scalar(node) || !parse_integer(node.Scalar(), &v))
    wrong_type(name, node, kind);
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    fail(name + " = " + node.Scalar() + ", expected a 32-bit integer");
  return static_cast<int>(v);
}

// Sets one key from a YAML node, with the type and per-key range checks.
void set_value(const std::string& name, const Field& f, const YAML::Node& node, Config& config) {
  void* p = f.ref(config);
  if (f.kind == Kind::String) {
    // An empty value (`init_from:`) is the empty string, as the defaults are.
    if (node.IsNull())
      *static_cast<std::string*>(p) = "";
    else if (node.IsScalar())
      *static_cast<std::string*>(p) = node.Scalar();
    else
      wrong_type(name, node, f.kind);
    check_value(name, f, config);
    return;
  }
  if (f.kind == Kind::IntList) {
    // An empty value (`layers_per_stage:`) or [] is the empty list, the default.
    auto& v = *static_cast<std::vector<int>*>(p);
    v.clear();
    if (!node.IsNull()) {
      if (!node.IsSequence()) wrong_type(name, node, f.kind);
      for (std::size_t i = 0; i < node.size(); ++i)
        v.push_back(integer_or_fail(name + "[" + std::to_string(i) + "]", node[i], Kind::Int));
    }
    check_value(name, f, config);
    return;
  }
  if (!node.IsScalar() || is_string_scalar(node)) wrong_type(name, node, f.kind);
  const std::string& text = node.Scalar();
  switch (f.kind) {
    case Kind::Int: {
      long long v = 0;
      if (!parse_integer(text, &v)) wrong_type(name, node, f.kind);
      if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
        fail(name + " = " + text + ", expected a 32-bit integer " + range_text(f.range, f.kind));
      *static_cast<int*>(p) = static_cast<int>(v);
      break;
    }
    case Kind::IntList:
    case Kind::UInt64: {
      std::uint64_t v = 0;
      bool overflow = false;
      if (!parse_unsigned(text, &v, &overflow)) {
        if (overflow)
          fail(name + " = " + text +
               ", expected <= " + std::to_string(std::numeric_limits<std::uint64_t>::max()));
        wrong_type(name, node, f.kind);
      }
      *static_cast<std::uint64_t*>(p) = v;
      break;
    }
    case Kind::Double: {
      double v = 0;
      if (!parse_double(text, &v)) wrong_type(name, node, f.kind);
      // The value as written ("beta1 = 1.0"), not as re-printed.
      if (!in_range(v, f.range))
        fail(name + " = " + text + ", expected " + range_text(f.range, f.kind));
      *static_cast<double*>(p) = v;
      break;
    }
    case Kind::Bool: {
      bool v = false;
      if (!YAML::convert<bool>::decode(node, v)) wrong_type(name, node, f.kind);
      *static_cast<bool*>(p) = v;
      break;
    }
    case Kind::String:
      break;
  }
  check_value(name, f, config);
}

// Edit distance, for "did you mean" on a misspelt key.
std::size_t distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1] ? 1u : 0u)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string closest(const std::string& word, const std::vector<std::string>& options) {
  std::string best;
  std::size_t best_d = std::max<std::size_t>(2, word.size() / 3) + 1;
  for (const auto& o : options) {
    const std::size_t d = distance(word, o);
    if (d < best_d) best_d = d, best = o;
  }
  return best;
}

const Section* find_section(const std::string& name) {
  for (const auto& s : sections())
    if (name == s.name) return &s;
  return nullptr;
}

const Section& section_or_fail(const std::string& name, const std::string& where) {
  if (const Section* s = find_section(name)) return *s;
  std::vector<std::string> names;
  for (const auto& s : sections()) names.push_back(s.name);
  const std::string guess = closest(name, names);
  fail("unknown section " + name + where + (guess.empty() ? "" : " (did you mean " + guess + "?)") +
       "; the sections are " + joined(names, ", "));
}

const Field& field_or_fail(const Section& sec, const std::string& key, const std::string& where) {
  for (const auto& f : sec.fields)
    if (key == f.key) return f;
  std::vector<std::string> keys;
  for (const auto& f : sec.fields) keys.push_back(f.key);
  std::string hint;
  const std::string guess = closest(key, keys);
  if (!guess.empty()) hint = " (did you mean " + std::string(sec.name) + "." + guess + "?)";
  // A right key in the wrong section is a common slip: say where it lives.
  for (const auto& other : sections())
    for (const auto& f : other.fields)
      if (key == f.key && &other != &sec) hint = " (" + key + " belongs to " + other.name + ":)";
  fail("unknown key " + std::string(sec.name) + "." + key + where + hint);
}

std::string scalar_key(const YAML::Node& key, const std::string& context) {
  if (!key.IsScalar()) fail(context + " has a key that is not a name: " + shown(key));
  return key.Scalar();
}

void apply_document(const YAML::Node& root, Config& config) {
  if (!root || root.IsNull()) return;  // an empty file: every default
  if (!root.IsMap())
    fail("the top level is " + shown(root) + ", expected a map of sections (model:, train:, ...)");
  std::set<std::string> seen_sections;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string sname = scalar_key(it->first, "the top level");
    const Section& sec = section_or_fail(sname, "");
    if (!seen_sections.insert(sname).second) fail("section " + sname + " appears twice");
    const YAML::Node body = it->second;  // a copy: the iterator yields temporaries
    if (body.IsNull()) continue;         // `log:` with nothing under it
    if (!body.IsMap()) fail(sname + " = " + shown(body) + ", expected a map of keys");
    std::set<std::string> seen;
    for (auto kt = body.begin(); kt != body.end(); ++kt) {
      const std::string key = scalar_key(kt->first, "section " + sname);
      const Field& f = field_or_fail(sec, key, "");
      const std::string name = sname + "." + key;
      if (!seen.insert(key).second) fail(name + " appears twice");
      set_value(name, f, kt->second, config);
    }
  }
}

void apply_override(const std::string& text, Config& config) {
  const std::string where = " in --set " + text;
  const auto eq = text.find('=');
  const auto dot = text.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq)
    fail("--set " + text + ": expected section.key=value");
  const std::string sname = text.substr(0, dot);
  const std::string key = text.substr(dot + 1, eq - dot - 1);
  const Section& sec = section_or_fail(sname, where);
  const Field& f = field_or_fail(sec, key, where);
  YAML::Node value;
  try {
    value = YAML::Load(text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    fail("--set " + text + ": the value is not YAML (" + e.msg + ")");
  }
  set_value(sname + "." + key, f, value, config);
}

Config parse_named(const std::string& yaml_text, const std::vector<std::string>& overrides,
                   const std::string& source) {
  Config config;
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(yaml_text);
  } catch (const YAML::Exception& e) {
    fail(source + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
         ": YAML syntax error: " + e.msg);
  }
  if (docs.size() > 1)
    fail(source + " holds " + std::to_string(docs.size()) + " YAML documents, expected one");
  if (!docs.empty()) apply_document(docs[0], config);
  for (const auto& o : overrides) apply_override(o, config);
  return config;
}

std::string list_text(const std::vector<int>& v) {
  std::string t = "[";
  for (std::size_t i = 0; i < v.size(); ++i) t += (i ? ", " : "") + std::to_string(v[i]);
  return t + "]";
}

// parallel.layers_per_stage: one count per model stage of the schedule (pp,
// or 2 pp for DualPipeV), each >= 1 (checked per key), adding up to the layers.
void check_layers_per_stage(const std::vector<int>& v, int stages, int num_layers,
                            const std::string& schedule) {
  const std::string name = "parallel.layers_per_stage = " + list_text(v);
  if (static_cast<int>(v.size()) != stages)
    fail(name + " has " + std::to_string(v.size()) + " entries, expected one per stage: " +
         std::to_string(stages) + " for parallel.schedule = " + schedule);
  long long sum = 0;
  for (const int n : v) sum += n;
  if (sum != num_layers)
    fail(name + " adds up to " + std::to_string(sum) +
         ", expected model.num_layers = " + std::to_string(num_layers));
}

std::string shape_of_groups(const ModelConfig& m) {
  return "topk_group " + std::to_string(m.topk_group) + " x " +
         std::to_string(m.num_experts / m.n_group) + " experts per group";
}

void check_data_file(const Config& c, bool eval_used) {
  const std::string& path = c.data.path;
  if (path.empty()) fail("data.path is empty, expected a token file");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("data.path = " + path + ": no such file");
  if (!S_ISREG(st.st_mode)) fail("data.path = " + path + " is not a regular file");
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("data.path = " + path + " cannot be read");
  }
  const auto bytes = static_cast<std::uint64_t>(st.st_size);
  const int tb = token_bytes(c.data.format);
  if (bytes % static_cast<std::uint64_t>(tb) != 0)
    fail("data.path = " + path + " has " + std::to_string(bytes) +
         " bytes, expected a multiple of " + std::to_string(tb) +
         " (data.format = " + c.data.format + ")");
  const DataSplit split = data_split(bytes / static_cast<std::uint64_t>(tb), c.data.val_fraction);
  const auto seq = static_cast<std::uint64_t>(c.train.seq_len);
  if (split.train <= seq + 1)
    fail("data.path = " + path + " gives a training split of " + std::to_string(split.train) +
         " tokens (" + std::to_string(split.total) +
         " in all, data.val_fraction = " + number_text(c.data.val_fraction) +
         "), expected more than train.seq_len + 1 = " + std::to_string(seq + 1));
  if (eval_used && split.val < seq + 1)
    fail("data.val_fraction = " + number_text(c.data.val_fraction) +
         " gives a validation split of " + std::to_string(split.val) + " tokens of data.path = " +
         path + ", expected at least train.seq_len + 1 = " + std::to_string(seq + 1) +
         " (or data.val_fraction = 0 / train.eval_batches = 0 for no eval)");
}

}  // namespace

int token_bytes(const std::string& format) {
  if (format == "bytes") return 1;
  if (format == "u16") return 2;
  if (format == "u32") return 4;
  fail("data.format = " + format + ", expected one of bytes, u16, u32");
}

DataSplit data_split(std::uint64_t total_tokens, double val_fraction) {
  DataSplit s;
  s.total = total_tokens;
  s.val = static_cast<std::uint64_t>(std::floor(static_cast<double>(total_tokens) * val_fraction));
  s.val = std::min(s.val, total_tokens);
  s.train = total_tokens - s.val;
  return s;
}

Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides) {
  return parse_named(yaml_text, overrides, "<text>");
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("cannot read " + path);
  return parse_named(text.str(), overrides, path);
}

void validate(const Config& config_in, int world_size) {
  // The per-key ranges again: a Config built in code never went through parse.
  Config config = config_in;
  for (const auto& sec : sections())
    for (const auto& f : sec.fields) check_value(std::string(sec.name) + "." + f.key, f, config);

  const ModelConfig& m = config.model;
  const auto s = [](long long v) { return std::to_string(v); };
  if (m.hidden_size % m.num_heads != 0)
    fail("model.hidden_size = " + s(m.hidden_size) +
         " is not a multiple of model.num_heads = " + s(m.num_heads));
  if (m.head_dim() % 2 != 0)
    fail("model.hidden_size / model.num_heads = " + s(m.hidden_size) + " / " + s(m.num_heads) +
         " = head_dim " + s(m.head_dim()) + ", expected even (RoPE turns pairs)");
  if (m.first_k_dense > m.num_layers)
    fail("model.first_k_dense = " + s(m.first_k_dense) +
         ", expected <= model.num_layers = " + s(m.num_layers));
  // The router's keys matter only where there is a MoE layer, but a config
  // that names an impossible router is wrong either way: check always.
  if (m.num_experts % m.n_group != 0)
    fail("model.n_group = " + s(m.n_group) +
         " does not divide model.num_experts = " + s(m.num_experts));
  const int per_group = m.num_experts / m.n_group;
  if (m.n_group > 1 && per_group < 2)
    fail("model.n_group = " + s(m.n_group) + " gives " + s(per_group) +
         " expert per group (model.num_experts = " + s(m.num_experts) +
         "), expected >= 2 (a group scores by its two highest experts)");
  if (m.topk_group > m.n_group)
    fail("model.topk_group = " + s(m.topk_group) + ", expected <= model.n_group = " + s(m.n_group));
  const int kept = m.topk_group * per_group;
  if (m.top_k > kept) {
    if (m.n_group == 1)
      fail("model.top_k = " + s(m.top_k) + ", expected <= model.num_experts = " + s(m.num_experts));
    fail("model.top_k = " + s(m.top_k) + ", expected <= " + s(kept) + " (" + shape_of_groups(m) +
         ")");
  }

  const TrainConfig& t = config.train;
  if (t.min_lr > t.lr)
    fail("train.min_lr = " + number_text(t.min_lr) +
         ", expected <= train.lr = " + number_text(t.lr));

  const ParallelConfig& p = config.parallel;
  if (world_size < 1) fail("world size " + s(world_size) + ", expected >= 1");
  if (p.pp * p.dp != world_size)
    fail("parallel.pp x parallel.dp = " + s(p.pp) + " x " + s(p.dp) + " = " + s(p.pp * p.dp) +
         ", expected the world size " + s(world_size) + " (the ranks epxrun started)");
  if (p.pp > 1) {
    pipeline::Schedule schedule;
    try {
      schedule = make_pipeline_schedule(config);
    } catch (const std::exception& e) {
      // The generator's reason, without its source location or rank prefix.
      std::string why = e.what();
      const auto at = why.rfind(" (");
      if (at != std::string::npos && why.find(".cpp:", at) != std::string::npos) why.resize(at);
      if (why.rfind("[rank ", 0) == 0 && why.find("] ") != std::string::npos)
        why.erase(0, why.find("] ") + 2);
      fail("parallel.schedule = " + p.schedule + " with parallel.pp = " + s(p.pp) +
           " and train.num_micro_batches = " + s(config.train.num_micro_batches) + ": " + why);
    }
    if (!p.layers_per_stage.empty()) {
      check_layers_per_stage(p.layers_per_stage, schedule.stages, m.num_layers, p.schedule);
    } else if (m.num_layers < schedule.stages) {
      fail("model.num_layers = " + s(m.num_layers) + " is fewer than the " + s(schedule.stages) +
           " pipeline stages of parallel.schedule = " + p.schedule +
           " with parallel.pp = " + s(p.pp) +
           (p.schedule == "auto"
                ? std::string(" (auto chose ") + pipeline::to_string(schedule.kind) + ")"
                : std::string()));
    }
  } else if (!p.layers_per_stage.empty()) {
    fail("parallel.layers_per_stage = " + list_text(p.layers_per_stage) +
         " splits the layers over pipeline stages, expected parallel.pp > 1 (it is 1)");
  }
  if (p.dp % p.ep != 0)
    fail("parallel.ep = " + s(p.ep) + " does not divide parallel.dp = " + s(p.dp));
  if (!config.balancer.enabled && m.num_experts % p.ep != 0)
    fail("parallel.ep = " + s(p.ep) + " does not divide model.num_experts = " + s(m.num_experts));

  if (!config.log.timeline.empty() && p.pp == 1)
    fail("log.timeline = " + config.log.timeline +
         " draws a pipeline's step, expected parallel.pp > 1 (it is 1)");

  const BalancerConfig& b = config.balancer;
  if (b.enabled && (m.num_experts + b.redundant_experts) % p.ep != 0)
    fail("balancer.redundant_experts = " + s(b.redundant_experts) + " gives " +
         s(m.num_experts + b.redundant_experts) + " expert slots per layer (model.num_experts = " +
         s(m.num_experts) + " + it), expected a multiple of parallel.ep = " + s(p.ep) +
         " (every rank of an EP group holds the same number of slots)");
  if (b.enabled && m.num_layers <= m.first_k_dense)
    fail("balancer.enabled = true, but the model has no MoE layer (model.first_k_dense = " +
         s(m.first_k_dense) + " >= model.num_layers = " + s(m.num_layers) + ")");

  if (config.data.format == "bytes" && m.vocab_size != 256)
    fail("model.vocab_size = " + s(m.vocab_size) + ", expected 256 with data.format = bytes");
  // Eval reads the validation split: it must hold one sequence when used.
  const bool eval_used = t.eval_batches > 0 && config.data.val_fraction > 0;
  check_data_file(config, eval_used);
}

pipeline::Schedule make_pipeline_schedule(const Config& c) {
  const ParallelConfig& p = c.parallel;
  if (p.schedule != "auto")
    return pipeline::make_schedule(pipeline::parse_schedule_kind(p.schedule),
                                   {p.pp, c.train.num_micro_batches});
  // auto: the simulator's pick for unit costs (f 1, b 2, w 1), no memory limit.
  pipeline::AutoRequest req;
  req.ranks = p.pp;
  req.microbatches = c.train.num_micro_batches;
  return pipeline::choose_schedule(req).schedule;
}

std::string grid_text(const ParallelConfig& p) {
  std::string s;
  if (p.pp > 1) s = "pp " + std::to_string(p.pp) + " (" + p.schedule + ") x ";
  return s + "dp " + std::to_string(p.dp) + " x ep " + std::to_string(p.ep);
}

std::string to_yaml(const Config& config_in) {
  Config config = config_in;
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const auto& sec : sections()) {
    out << YAML::Key << sec.name << YAML::Value << YAML::BeginMap;
    for (const auto& f : sec.fields) {
      out << YAML::Key << f.key << YAML::Value;
      void* p = f.ref(config);
      switch (f.kind) {
        case Kind::Int:
          out << *static_cast<int*>(p);
          break;
        case Kind::UInt64:
          out << *static_cast<std::uint64_t*>(p);
          break;
        case Kind::Double:
          out << number_text(*static_cast<double*>(p));
          break;
        // Quoted, so that a path such as "123" or "true" reads back as a string.
        case Kind::String:
          out << YAML::DoubleQuoted << *static_cast<std::string*>(p);
          break;
        case Kind::Bool:
          out << *static_cast<bool*>(p);
          break;
        case Kind::IntList:
          out << YAML::Flow << *static_cast<std::vector<int>*>(p);
          break;
      }
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace epx::train
