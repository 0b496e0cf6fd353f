#include "benchmarks/options.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <sstream>

namespace epx::bench {

void OptionSet::add_int(const std::string& name, std::int64_t def, std::int64_t min,
                        std::int64_t max, const std::string& help) {
  Option o;
  o.name = name;
  o.value = o.def = def;
  o.min = min;
  o.max = max;
  o.help = help;
  options_.push_back(o);
}

void OptionSet::add_flag(const std::string& name, const std::string& help) {
  Option o;
  o.name = name;
  o.type = Type::Flag;
  o.max = 1;
  o.help = help;
  options_.push_back(o);
}

void OptionSet::add_double(const std::string& name, double def, double min, double max,
                           const std::string& help) {
  Option o;
  o.name = name;
  o.type = Type::Double;
  o.real = o.real_def = def;
  o.real_min = min;
  o.real_max = max;
  o.help = help;
  options_.push_back(o);
}

void OptionSet::add_string(const std::string& name, const std::string& def,
                           const std::string& choices, const std::string& help) {
  Option o;
  o.name = name;
  o.type = Type::String;
  o.text = o.text_def = def;
  o.choices = choices;
  o.help = help;
  options_.push_back(o);
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
    o->given = true;
    if (o->type == Type::Flag) {
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
    set_value(*o, text);
  }
}

void OptionSet::set_value(Option& o, const std::string& text) {
  const std::string bad = "epx-bench " + command_ + ": bad --" + o.name + " value '" + text + "'";
  if (o.type == Type::String) {
    if (!o.choices.empty() && (" " + o.choices + " ").find(" " + text + " ") == std::string::npos)
      throw UsageError(bad + ": expected one of " + o.choices);
    o.text = text;
    return;
  }
  if (o.type == Type::Double) {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || errno != 0 || *end != '\0' || !(v >= o.real_min && v <= o.real_max)) {
      std::ostringstream range;
      range << ": expected a number from " << o.real_min << " to " << o.real_max;
      throw UsageError(bad + range.str());
    }
    o.real = v;
    return;
  }
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || errno != 0 || *end != '\0' || v < o.min || v > o.max) {
    throw UsageError(bad + ": expected a whole number from " + std::to_string(o.min) + " to " +
                     std::to_string(o.max));
  }
  o.value = v;
}

std::int64_t OptionSet::get_int(const std::string& name) const {
  return at(name).value;
}

bool OptionSet::flag(const std::string& name) const {
  return at(name).value != 0;
}

double OptionSet::get_double(const std::string& name) const {
  return at(name).real;
}

const std::string& OptionSet::get_string(const std::string& name) const {
  return at(name).text;
}

bool OptionSet::given(const std::string& name) const {
  return at(name).given;
}

std::string OptionSet::usage(const std::string& summary) const {
  std::ostringstream os;
  os << "usage: epxrun -n N -- epx-bench " << command_ << " [options]\n\n"
     << summary << "\n\noptions:\n";
  for (const Option& o : options_) {
    const char* arg = o.type == Type::Flag     ? ""
                      : o.type == Type::String ? (o.choices.empty() ? " TEXT" : " WORD")
                                               : " N";
    std::string left = "  --" + o.name + arg;
    left.resize(std::max<std::size_t>(left.size() + 2, 20), ' ');
    os << left << o.help;
    if (o.type == Type::Int) os << " (default " << o.def << ")";
    if (o.type == Type::Double) os << " (default " << o.real_def << ")";
    if (o.type == Type::String && !o.text_def.empty()) os << " (default " << o.text_def << ")";
    os << "\n";
  }
  os << "  --help            this text\n";
  return os.str();
}

}  // namespace epx::bench
