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

// Every Param registers itself when built and unregisters when destroyed, so
// the list never holds a Param that is gone (one on the stack, in a test).
void register_param(const ParamBase* param);
void unregister_param(const ParamBase* param) noexcept;
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

// A constraint beyond the type: a value from the environment that fails
// `ok` is an InvalidArgument "NAME=text: expected <expected>", like a value
// that does not parse.
template <class T>
struct ParamCheck {
  bool (*ok)(const T&) = nullptr;
  const char* expected = nullptr;
};

template <class T>
class Param final : public ParamBase {
 public:
  Param(const char* env, T def, const char* doc, ParamCheck<T> check = {})
      : env_(env), default_(std::move(def)), doc_(doc), check_(check) {
    register_param(this);
  }
  ~Param() override { unregister_param(this); }
  Param(const Param&) = delete;
  Param& operator=(const Param&) = delete;
  // The value: the environment's if set and valid, else the default. Read once.
  const T& get() const {
    std::call_once(once_, [this] { load(); });
    return value_;
  }
  const T& default_value() const noexcept { return default_; }
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
  ParamCheck<T> check_;
  mutable std::once_flag once_;
  mutable T value_{};
  mutable bool from_env_ = false;
};

extern template class Param<bool>;
extern template class Param<int>;
extern template class Param<double>;
extern template class Param<std::string>;

namespace params {
extern Param<double> timeout_s;           // EPX_TIMEOUT_S
extern Param<int> ranks_per_node;         // EPX_RANKS_PER_NODE
extern Param<std::string> log_level;      // EPX_LOG_LEVEL
extern Param<std::string> log_subsys;     // EPX_LOG_SUBSYS
extern Param<std::string> log_file;       // EPX_LOG_FILE
extern Param<bool> shm_direct;            // EPX_SHM_DIRECT
extern Param<std::string> internode_transport;  // EPX_INTERNODE_TRANSPORT
extern Param<std::string> ucx_progress;         // EPX_UCX_PROGRESS
extern Param<std::string> ucx_signal;           // EPX_UCX_SIGNAL
extern Param<std::string> mpi_transport;        // EPX_MPI_TRANSPORT (older name)
}  // namespace params

// One timeout convention for every options struct (BufferOptions,
// ExecutorOptions, ...): 0 means unset, and then EPX_TIMEOUT_S (or its
// default) applies; any other value must be > 0 seconds (inf: no limit).
// Throws InvalidArgument naming `what` (e.g. "Buffer: options.timeout_s") or
// EPX_TIMEOUT_S, with the value given.
double resolve_timeout_s(double requested, const char* what);
// A bound that is always valid, for the agreement that reports a bad timeout
// to every rank: resolve_timeout_s's answer when there is one, else the
// default of EPX_TIMEOUT_S. Never throws.
double agreement_timeout_s(double requested) noexcept;

}  // namespace epx::core
