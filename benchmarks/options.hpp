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

  // args: the words after the subcommand's name. Throws UsageError.
  void parse(const std::vector<std::string>& args);

  std::int64_t get_int(const std::string& name) const;
  bool flag(const std::string& name) const;
  std::string usage(const std::string& summary) const;

 private:
  struct Option {
    std::string name;
    bool is_flag = false;
    std::int64_t value = 0;  // flags: 0/1
    std::int64_t def = 0;
    std::int64_t min = 0;
    std::int64_t max = 0;
    std::string help;
  };
  Option* lookup(const std::string& name);
  const Option& at(const std::string& name) const;

  std::string command_;
  std::vector<Option> options_;
};

}  // namespace epx::bench
