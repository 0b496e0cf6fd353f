// The config's keys as one table (section, key, type, range), so that
// parsing, --set overrides, range checks and to_yaml() read the same list.
#include "train/config.hpp"

#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <sys/stat.h>
#include <variant>

#include <yaml-cpp/yaml.h>

#include "core/check.hpp"

namespace epx::train {

namespace {

using Target = std::variant<int*, double*, bool*, std::string*, std::uint64_t*>;

struct Key {
  const char* section;
  const char* name;
  Target target;
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_open = false;  // min itself is out of range
  bool max_open = false;
  std::vector<std::string> choices;  // for strings: the allowed values (empty: any)
};

constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<Key> keys_of(Config& c) {
  ModelConfig& m = c.model;
  TrainConfig& t = c.train;
  return {
      {"model", "vocab_size", &m.vocab_size, 2, 1 << 30},
      {"model", "hidden_size", &m.hidden_size, 1, 1 << 20},
      {"model", "num_layers", &m.num_layers, 1, 4096},
      {"model", "num_heads", &m.num_heads, 1, 4096},
      {"model", "intermediate_size", &m.intermediate_size, 1, 1 << 22},
      {"model", "first_k_dense", &m.first_k_dense, 0, 4096},
      {"model", "num_experts", &m.num_experts, 1, 1 << 16},
      {"model", "num_shared_experts", &m.num_shared_experts, 0, 64},
      {"model", "moe_intermediate_size", &m.moe_intermediate_size, 1, 1 << 22},
      {"model", "top_k", &m.top_k, 1, 1 << 16},
      {"model", "n_group", &m.n_group, 1, 1 << 16},
      {"model", "topk_group", &m.topk_group, 1, 1 << 16},
      {"model", "score_function", &m.score_function, 0, 0, false, false, {"sigmoid", "softmax"}},
      {"model", "routed_scaling_factor", &m.routed_scaling_factor, 0, kInf, true},
      {"model", "bias_update_rate", &m.bias_update_rate, 0, kInf},
      {"model", "rms_norm_eps", &m.rms_norm_eps, 0, 1, true},
      {"model", "rope_theta", &m.rope_theta, 1, kInf},
      {"model", "init_std", &m.init_std, 0, kInf, true},
      {"model", "init_from", &m.init_from},
      {"train", "seq_len", &t.seq_len, 1, 1 << 20},
      {"train", "micro_batch_size", &t.micro_batch_size, 1, 1 << 20},
      {"train", "num_micro_batches", &t.num_micro_batches, 1, 1 << 20},
      {"train", "max_steps", &t.max_steps, 0, 1 << 30},
      {"train", "lr", &t.lr, 0, kInf},
      {"train", "min_lr", &t.min_lr, 0, kInf},
      {"train", "warmup_steps", &t.warmup_steps, 0, 1 << 30},
      {"train", "weight_decay", &t.weight_decay, 0, kInf},
      {"train", "beta1", &t.beta1, 0, 1, false, true},
      {"train", "beta2", &t.beta2, 0, 1, false, true},
      {"train", "eps", &t.eps, 0, kInf, true},
      {"train", "grad_clip", &t.grad_clip, 0, kInf},
      {"train", "seed", &t.seed},
      {"train", "eval_every", &t.eval_every, 0, 1 << 30},
      {"train", "eval_batches", &t.eval_batches, 0, 1 << 20},
      {"train", "checkpoint_every", &t.checkpoint_every, 0, 1 << 30},
      {"train", "checkpoint_dir", &t.checkpoint_dir},
      {"train", "threads", &t.threads, 1, 1024},
      {"data", "path", &c.data.path},
      {"data", "format", &c.data.format, 0, 0, false, false, {"bytes", "u16", "u32"}},
      {"data", "val_fraction", &c.data.val_fraction, 0, 1, false, true},
      {"parallel", "dp", &c.parallel.dp, 1, 1 << 20},
      {"parallel", "ep", &c.parallel.ep, 1, 1 << 20},
      {"parallel", "fp8_dispatch", &c.parallel.fp8_dispatch},
      {"log", "metrics", &c.log.metrics},
      {"log", "every", &c.log.every, 1, 1 << 30},
      {"log", "report", &c.log.report},
  };
}

std::string full(const Key& k) { return std::string(k.section) + "." + k.name; }

const char* type_name(const Target& t) {
  switch (t.index()) {
    case 0: return "an integer";
    case 1: return "a number";
    case 2: return "true or false";
    case 3: return "a string";
    default: return "a non-negative integer";
  }
}

std::string node_text(const YAML::Node& n) {
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "null";
}

void check_range(const Key& k, double v, const std::string& text) {
  const bool low = k.min_open ? !(v > k.min) : !(v >= k.min);
  const bool high = k.max_open ? !(v < k.max) : !(v <= k.max);
  if (!std::isfinite(v) && k.max == kInf && v > 0 && !k.max_open) return;
  if (low || high || std::isnan(v)) {
    std::ostringstream range;
    range << (k.min_open ? "(" : "[") << k.min << ", " << k.max << (k.max_open ? ")" : "]");
    EPX_THROW(InvalidArgument, "config: ", full(k), " = ", text, ", expected a value in ", range.str());
  }
}

void assign(const Key& k, const YAML::Node& n) {
  const std::string text = node_text(n);
  if (!n.IsScalar())
    EPX_THROW(InvalidArgument, "config: ", full(k), " = ", text, ", expected ", type_name(k.target));
  const std::string s = n.Scalar();
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        try {
          if constexpr (std::is_same_v<T, std::string>) {
            *p = s;
            if (!k.choices.empty() && std::find(k.choices.begin(), k.choices.end(), s) == k.choices.end()) {
              std::string all;
              for (const auto& c : k.choices) all += (all.empty() ? "" : " | ") + c;
              EPX_THROW(InvalidArgument, "config: ", full(k), " = '", s, "', expected ", all);
            }
          } else if constexpr (std::is_same_v<T, bool>) {
            *p = n.as<bool>();
          } else if constexpr (std::is_same_v<T, std::uint64_t>) {
            if (!s.empty() && s[0] == '-') throw YAML::BadConversion(n.Mark());
            *p = n.as<std::uint64_t>();
          } else if constexpr (std::is_same_v<T, int>) {
            const long long v = n.as<long long>();
            check_range(k, static_cast<double>(v), s);
            *p = static_cast<int>(v);
          } else {
            const double v = n.as<double>();
            check_range(k, v, s);
            *p = v;
          }
        } catch (const YAML::BadConversion&) {
          EPX_THROW(InvalidArgument, "config: ", full(k), " = ", text, ", expected ",
                    type_name(k.target));
        }
      },
      k.target);
}

// The known key closest to `name` (edit distance), for "did you mean".
std::string closest(const std::vector<Key>& keys, const std::string& name) {
  const auto distance = [](const std::string& a, const std::string& b) {
    std::vector<std::size_t> d(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) d[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t prev = d[0];
      d[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        const std::size_t cur = d[j];
        d[j] = std::min({d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1)});
        prev = cur;
      }
    }
    return d[b.size()];
  };
  std::string best;
  std::size_t bd = 4;
  for (const Key& k : keys) {
    const std::size_t dd = distance(name, full(k));
    if (dd < bd) bd = dd, best = full(k);
  }
  return best.empty() ? "" : " (did you mean " + best + "?)";
}

void apply(Config& c, const std::string& section, const std::string& name, const YAML::Node& n) {
  const std::vector<Key> keys = keys_of(c);
  for (const Key& k : keys)
    if (section == k.section && name == k.name) return assign(k, n);
  EPX_THROW(InvalidArgument, "config: unknown key ", section, ".", name,
            closest(keys, section + "." + name));
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides) {
  Config c;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    EPX_THROW(InvalidArgument, "config: not valid YAML: ", e.what());
  }
  if (root.IsDefined() && !root.IsNull()) {
    EPX_CHECK(root.IsMap(), InvalidArgument, "config: the top level must be a mapping of sections");
    static const char* kSections[] = {"model", "train", "data", "parallel", "log"};
    for (const auto& sec : root) {
      const std::string s = sec.first.as<std::string>();
      if (std::find(std::begin(kSections), std::end(kSections), s) == std::end(kSections))
        EPX_THROW(InvalidArgument, "config: unknown section '", s,
                  "', expected model, train, data, parallel or log");
      if (sec.second.IsNull()) continue;
      EPX_CHECK(sec.second.IsMap(), InvalidArgument, "config: section ", s, " must be a mapping");
      for (const auto& kv : sec.second) apply(c, s, kv.first.as<std::string>(), kv.second);
    }
  }
  for (const std::string& o : overrides) {
    const auto eq = o.find('=');
    const auto dot = o.find('.');
    EPX_CHECK(eq != std::string::npos && dot != std::string::npos && dot < eq, InvalidArgument,
              "config: --set '", o, "', expected section.key=value");
    YAML::Node v;
    try {
      v = YAML::Load(o.substr(eq + 1));
    } catch (const YAML::Exception&) {
      v = YAML::Node(o.substr(eq + 1));
    }
    if (v.IsNull()) v = YAML::Node(std::string());
    apply(c, o.substr(0, dot), o.substr(dot + 1, eq - dot - 1), v);
  }
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  EPX_CHECK(in.good(), InvalidArgument, "config: cannot read '", path, "'");
  std::stringstream s;
  s << in.rdbuf();
  return parse_config(s.str(), overrides);
}

void validate(const Config& c, int world_size) {
  const ModelConfig& m = c.model;
  const TrainConfig& t = c.train;
  EPX_CHECK(m.hidden_size % m.num_heads == 0, InvalidArgument, "config: model.hidden_size = ",
            m.hidden_size, " is not a multiple of model.num_heads = ", m.num_heads);
  EPX_CHECK(m.head_dim() % 2 == 0, InvalidArgument, "config: head_dim = model.hidden_size / ",
            "model.num_heads = ", m.head_dim(), ", expected an even number (RoPE turns pairs)");
  EPX_CHECK(m.first_k_dense <= m.num_layers, InvalidArgument, "config: model.first_k_dense = ",
            m.first_k_dense, ", expected <= model.num_layers = ", m.num_layers);
  EPX_CHECK(m.num_experts % m.n_group == 0, InvalidArgument, "config: model.num_experts = ",
            m.num_experts, " is not a multiple of model.n_group = ", m.n_group);
  const int per_group = m.num_experts / m.n_group;
  EPX_CHECK(m.n_group == 1 || per_group >= 2, InvalidArgument, "config: model.num_experts / ",
            "model.n_group = ", per_group, " experts per group, expected >= 2 (a group scores ",
            "its two best)");
  EPX_CHECK(m.topk_group <= m.n_group, InvalidArgument, "config: model.topk_group = ", m.topk_group,
            ", expected <= model.n_group = ", m.n_group);
  const int kept = m.n_group == 1 ? m.num_experts : m.topk_group * per_group;
  EPX_CHECK(m.top_k <= kept, InvalidArgument, "config: model.top_k = ", m.top_k, ", expected <= ",
            kept, " (experts in the kept groups: topk_group ", m.topk_group, " x ", per_group,
            " experts per group)");
  EPX_CHECK(t.min_lr <= t.lr, InvalidArgument, "config: train.min_lr = ", t.min_lr,
            ", expected <= train.lr = ", t.lr);
  EPX_CHECK(c.data.format != "bytes" || m.vocab_size == 256, InvalidArgument,
            "config: model.vocab_size = ", m.vocab_size, ", expected 256 with data.format = bytes");
  const ParallelConfig& p = c.parallel;
  EPX_CHECK(p.dp == world_size, InvalidArgument, "config: parallel.dp = ", p.dp,
            ", expected the world size ", world_size, " (epxrun -n ", p.dp, ")");
  EPX_CHECK(p.dp % p.ep == 0, InvalidArgument, "config: parallel.dp = ", p.dp,
            " is not a multiple of parallel.ep = ", p.ep);
  EPX_CHECK(m.num_experts % p.ep == 0, InvalidArgument, "config: model.num_experts = ",
            m.num_experts, " is not a multiple of parallel.ep = ", p.ep);
  EPX_CHECK(!p.fp8_dispatch || m.hidden_size % 128 == 0, InvalidArgument,
            "config: parallel.fp8_dispatch needs model.hidden_size % 128 == 0, got ", m.hidden_size);
  EPX_CHECK(!c.data.path.empty(), InvalidArgument, "config: data.path is not set");
  struct stat st {};
  EPX_CHECK(::stat(c.data.path.c_str(), &st) == 0 && S_ISREG(st.st_mode), InvalidArgument,
            "config: data.path = '", c.data.path, "' is missing or not a file");
  const std::int64_t width = c.data.format == "u16" ? 2 : c.data.format == "u32" ? 4 : 1;
  const std::int64_t total = static_cast<std::int64_t>(st.st_size) / width;
  const auto val = static_cast<std::int64_t>(std::floor(static_cast<double>(total) * c.data.val_fraction));
  EPX_CHECK(total - val > t.seq_len + 1, InvalidArgument, "config: data.path = '", c.data.path,
            "' gives ", total - val, " training tokens, expected more than train.seq_len + 1 = ",
            t.seq_len + 1);
  EPX_CHECK(t.eval_batches == 0 || val > t.seq_len + 1, InvalidArgument, "config: data.val_fraction = ",
            c.data.val_fraction, " gives ", val, " validation tokens, expected more than train.seq_len + 1 = ",
            t.seq_len + 1, " (or train.eval_batches = 0)");
}

std::string to_yaml(const Config& config) {
  Config c = config;
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string section;
  for (const Key& k : keys_of(c)) {
    if (section != k.section) {
      if (!section.empty()) out << YAML::EndMap;
      section = k.section;
      out << YAML::Key << section << YAML::Value << YAML::BeginMap;
    }
    out << YAML::Key << k.name << YAML::Value;
    std::visit(
        [&](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, double>) {
            std::ostringstream s;
            s.precision(17);
            s << *p;
            out << s.str();
          } else if constexpr (std::is_same_v<T, std::string>) {
            out << YAML::DoubleQuoted << *p;
          } else {
            out << *p;
          }
        },
        k.target);
  }
  if (!section.empty()) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace epx::train
