// Options of one epx-bench subcommand: declared with a default and a help
// line, parsed from "--name value" / "--name=value" / "--flag", and printed as
// the subcommand's usage. Errors name the option and the value.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace epx::bench {

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class OptionSet {
 public:
  explicit OptionSet(std::string command) : command_(std::move(command)) {}

  void add_int(const std::string& name, std::int64_t def, std::int64_t min, std::int64_t max,
               const std::string& help);
  void add_flag(const std::string& name, const std::string& help);
  void add_double(const std::string& name, double def, double min, double max,
                  const std::string& help);
  // `choices`: the accepted words, "" for any text (a file name).
  void add_string(const std::string& name, const std::string& def, const std::string& choices,
                  const std::string& help);

  // args: the words after the subcommand's name. Throws UsageError.
  void parse(const std::vector<std::string>& args);

  std::int64_t get_int(const std::string& name) const;
  bool flag(const std::string& name) const;
  double get_double(const std::string& name) const;
  const std::string& get_string(const std::string& name) const;
  bool given(const std::string& name) const;  // set on the command line
  std::string usage(const std::string& summary) const;

 private:
  enum class Type { Int, Flag, Double, String };
  struct Option {
    std::string name;
    Type type = Type::Int;
    std::int64_t value = 0;  // flags: 0/1
    std::int64_t def = 0;
    std::int64_t min = 0;
    std::int64_t max = 0;
    std::string help;
    double real = 0, real_def = 0, real_min = 0, real_max = 0;  // Type::Double
    std::string text, text_def, choices;                        // Type::String
    bool given = false;
  };
  void set_value(Option& o, const std::string& text);
  Option* lookup(const std::string& name);
  const Option& at(const std::string& name) const;

  std::string command_;
  std::vector<Option> options_;
};

}  // namespace epx::bench
