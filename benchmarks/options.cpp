#include "benchmarks/options.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <sstream>

namespace epx::bench {

void OptionSet::add_int(const std::string& name, std::int64_t def, std::int64_t min,
                        std::int64_t max, const std::string& help) {
  options_.push_back(Option{name, false, def, def, min, max, help});
}

void OptionSet::add_flag(const std::string& name, const std::string& help) {
  options_.push_back(Option{name, true, 0, 0, 0, 1, help});
}

OptionSet::Option* OptionSet::lookup(const std::string& name) {
  for (Option& o : options_) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

const OptionSet::Option& OptionSet::at(const std::string& name) const {
  for (const Option& o : options_) {
    if (o.name == name) return o;
  }
  throw std::logic_error("epx-bench " + command_ + ": no option --" + name + " declared");
}

void OptionSet::parse(const std::vector<std::string>& args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& word = args[i];
    if (word.rfind("--", 0) != 0 || word.size() == 2) {
      throw UsageError("epx-bench " + command_ + ": unexpected argument '" + word + "'");
    }
    std::string name = word.substr(2);
    std::string text;
    bool inline_value = false;
    if (const std::size_t eq = name.find('='); eq != std::string::npos) {
      text = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    Option* o = lookup(name);
    if (o == nullptr)
      throw UsageError("epx-bench " + command_ + ": unknown option '--" + name + "'");
    if (o->is_flag) {
      if (inline_value) {
        throw UsageError("epx-bench " + command_ + ": option --" + name + " takes no value (got '" +
                         text + "')");
      }
      o->value = 1;
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= args.size())
        throw UsageError("epx-bench " + command_ + ": option --" + name + " needs a value");
      text = args[++i];
    }
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || errno != 0 || *end != '\0' || v < o->min || v > o->max) {
      throw UsageError("epx-bench " + command_ + ": bad --" + name + " value '" + text +
                       "': expected a whole number from " + std::to_string(o->min) + " to " +
                       std::to_string(o->max));
    }
    o->value = v;
  }
}

std::int64_t OptionSet::get_int(const std::string& name) const { return at(name).value; }

bool OptionSet::flag(const std::string& name) const { return at(name).value != 0; }

std::string OptionSet::usage(const std::string& summary) const {
  std::ostringstream os;
  os << "usage: epxrun -n N -- epx-bench " << command_ << " [options]\n\n"
     << summary << "\n\noptions:\n";
  for (const Option& o : options_) {
    std::string left = "  --" + o.name + (o.is_flag ? "" : " N");
    left.resize(std::max<std::size_t>(left.size() + 2, 20), ' ');
    os << left << o.help;
    if (!o.is_flag) os << " (default " << o.def << ")";
    os << "\n";
  }
  os << "  --help            this text\n";
  return os.str();
}

}  // namespace epx::bench
