// The typed parameter registry. Every tunable of epx is one EPX_PARAM,
// declared here and defined once in config.cpp, read from the environment on
// first use and cached. `epxrun --print-config` lists them all.
// Precedence: an explicit API struct field > environment > default.
#pragma once

#include <mutex>
#include <ostream>
#include <string>
#include <vector>

namespace epx::core {

struct ParamInfo {
  std::string env;            // e.g. "EPX_TIMEOUT_S"
  std::string value;          // current value as text
  std::string default_value;  // default as text
  bool from_env = false;      // true: the environment set it
  std::string doc;
};

class ParamBase {
 public:
  virtual ~ParamBase() = default;
  virtual ParamInfo info() const = 0;
};

void register_param(const ParamBase* param);
std::vector<ParamInfo> list_params();
// One line per parameter: NAME=value (source) - doc.
void print_params(std::ostream& os);

// Parses `text` for parameter `env`; throws InvalidArgument naming both on failure.
bool parse_param(const std::string& env, const std::string& text, bool*);
bool parse_param(const std::string& env, const std::string& text, int*);
bool parse_param(const std::string& env, const std::string& text, double*);
bool parse_param(const std::string& env, const std::string& text, std::string*);
std::string param_text(bool v);
std::string param_text(int v);
std::string param_text(double v);
std::string param_text(const std::string& v);

template <class T>
class Param final : public ParamBase {
 public:
  Param(const char* env, T def, const char* doc) : env_(env), default_(std::move(def)), doc_(doc) {
    register_param(this);
  }
  // The value: the environment's if set and valid, else the default. Read once.
  const T& get() const {
    std::call_once(once_, [this] { load(); });
    return value_;
  }
  bool from_env() const {
    get();
    return from_env_;
  }
  ParamInfo info() const override {
    return ParamInfo{env_, param_text(get()), param_text(default_), from_env_, doc_};
  }

 private:
  void load() const;
  const char* env_;
  T default_;
  const char* doc_;
  mutable std::once_flag once_;
  mutable T value_{};
  mutable bool from_env_ = false;
};

extern template class Param<bool>;
extern template class Param<int>;
extern template class Param<double>;
extern template class Param<std::string>;

namespace params {
extern Param<double> timeout_s;          // EPX_TIMEOUT_S
extern Param<int> ranks_per_node;        // EPX_RANKS_PER_NODE
extern Param<std::string> log_level;     // EPX_LOG_LEVEL
extern Param<std::string> log_subsys;    // EPX_LOG_SUBSYS
extern Param<std::string> log_file;      // EPX_LOG_FILE
extern Param<bool> shm_direct;           // EPX_SHM_DIRECT
}  // namespace params

}  // namespace epx::core
