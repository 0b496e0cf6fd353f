#include "core/config.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <sstream>

#include "core/check.hpp"
#include "core/log.hpp"

namespace epx::core {

namespace {
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::vector<const ParamBase*>& registry() {
  static std::vector<const ParamBase*> r;
  return r;
}
}  // namespace

void register_param(const ParamBase* param) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry().push_back(param);
}

void unregister_param(const ParamBase* param) noexcept {
  std::lock_guard<std::mutex> lock(registry_mutex());
  std::vector<const ParamBase*>& r = registry();
  r.erase(std::remove(r.begin(), r.end(), param), r.end());
}

std::vector<ParamInfo> list_params() {
  std::vector<const ParamBase*> all;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    all = registry();
  }
  std::vector<ParamInfo> out;
  for (const ParamBase* p : all) out.push_back(p->info());
  return out;
}

void print_params(std::ostream& os) {
  for (const ParamInfo& p : list_params()) {
    os << std::left << std::setw(22) << p.env << " = " << std::setw(10) << p.value << " ("
       << (p.from_env ? "environment" : "default") << ", default " << p.default_value << ")  "
       << p.doc << "\n";
  }
}

bool parse_param(const std::string& env, const std::string& text, bool* out) {
  if (text == "1" || text == "true" || text == "yes" || text == "on") return *out = true, true;
  if (text == "0" || text == "false" || text == "no" || text == "off") return *out = false, true;
  EPX_THROW(InvalidArgument, env, "=", text, ": expected 0/1, true/false, yes/no or on/off");
}

bool parse_param(const std::string& env, const std::string& text, int* out) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(text.c_str(), &end, 10);
  EPX_CHECK(errno == 0 && end != text.c_str() && *end == '\0' && v >= INT32_MIN && v <= INT32_MAX,
            InvalidArgument, env, "=", text, ": expected an integer");
  *out = static_cast<int>(v);
  return true;
}

bool parse_param(const std::string& env, const std::string& text, double* out) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text.c_str(), &end);
  EPX_CHECK(errno == 0 && end != text.c_str() && *end == '\0', InvalidArgument, env, "=", text,
            ": expected a number");
  *out = v;
  return true;
}

bool parse_param(const std::string&, const std::string& text, std::string* out) {
  *out = text;
  return true;
}

std::string param_text(bool v) { return v ? "1" : "0"; }
std::string param_text(int v) { return std::to_string(v); }
std::string param_text(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
std::string param_text(const std::string& v) { return v.empty() ? "\"\"" : v; }

template <class T>
void Param<T>::load() const {
  value_ = default_;
  const char* s = std::getenv(env_);
  if (s == nullptr || *s == '\0') return;
  T v{};
  parse_param(env_, s, &v);
  EPX_CHECK(check_.ok == nullptr || check_.ok(v), InvalidArgument, env_, "=", s, ": expected ",
            check_.expected);
  value_ = v;
  from_env_ = true;
  // The log parameters configure the logger itself: logging them here would recurse.
  if (std::string(env_).rfind("EPX_LOG", 0) != 0)
    EPX_LOG(Info, Core, env_, " set by environment to ", param_text(value_));
}

template class Param<bool>;
template class Param<int>;
template class Param<double>;
template class Param<std::string>;

namespace params {
// !(v > 0) also refuses nan, which would make every deadline pass at once.
Param<double> timeout_s("EPX_TIMEOUT_S", 300.0,
                        "Bound of every wait on a peer, seconds (a timeout_s argument or "
                        "options field overrides it when not 0)",
                        {[](const double& v) { return v > 0; },
                         "a number of seconds > 0 (inf: no limit)"});
Param<int> ranks_per_node("EPX_RANKS_PER_NODE", 0,
                          "Ranks per virtual node (0: one node per shared-memory host)",
                          {[](const int& v) { return v >= 0; }, "0 or a number of ranks >= 1"});
Param<std::string> log_level("EPX_LOG_LEVEL", "WARN", "Log level: WARN, INFO, DEBUG or TRACE");
Param<std::string> log_subsys("EPX_LOG_SUBSYS", "ALL",
                              "Comma list of subsystems to log: CORE,COMM,TRANSPORT,KERNELS,"
                              "PIPELINE,BALANCER,LAUNCH or ALL; ^LIST excludes");
Param<std::string> log_file("EPX_LOG_FILE", "",
                            "Log to this file instead of stderr (%h host, %p pid, %r rank)");
Param<bool> shm_direct("EPX_SHM_DIRECT", true,
                       "shm transport: write peers' memory with direct stores (0: use the "
                       "put path every transport has, for testing)");
Param<std::string> internode_transport(
    "EPX_INTERNODE_TRANSPORT", "auto",
    "Between nodes: ucx (UCX puts; no call waits on a peer), rma (MPI-3 windows; a peer "
    "stalled outside MPI can hold a signal past the timeout), msg (MPI point-to-point "
    "messages; no call waits on a peer) or auto (ucx when built with UCX, else rma)",
    {[](const std::string& v) { return v == "auto" || v == "ucx" || v == "rma" || v == "msg"; },
     "auto, ucx, rma or msg"});
Param<std::string> ucx_progress(
    "EPX_UCX_PROGRESS", "thread",
    "ucx transport: thread (a progress thread per Buffer serves incoming puts and pushes "
    "pending ones while the rank computes) or inline (progress only inside epx's calls)",
    {[](const std::string& v) { return v == "thread" || v == "inline"; }, "thread or inline"});
Param<std::string> ucx_signal(
    "EPX_UCX_SIGNAL", "flush",
    "ucx transport: how a signal follows the puts before it: fence (ucp_worker_fence, then "
    "the store) or flush (the store once ucp_ep_flush_nbx of the puts has completed at the "
    "target: one round trip more)",
    {[](const std::string& v) { return v == "fence" || v == "flush"; }, "fence or flush"});
Param<std::string> mpi_transport(
    "EPX_MPI_TRANSPORT", "rma",
    "Older name, read when EPX_INTERNODE_TRANSPORT is auto: rma or msg chooses that transport",
    {[](const std::string& v) { return v == "rma" || v == "msg"; }, "rma or msg"});
}  // namespace params

double resolve_timeout_s(double requested, const char* what) {
  if (requested == 0) return params::timeout_s.get();
  EPX_CHECK(requested > 0, InvalidArgument, what, " = ", requested,
            ", expected > 0 seconds (inf: no limit), or 0 for EPX_TIMEOUT_S");
  return requested;
}

double agreement_timeout_s(double requested) noexcept {
  try {
    return resolve_timeout_s(requested, "timeout_s");
  } catch (...) {
    return params::timeout_s.default_value();
  }
}

}  // namespace epx::core
