#include "benchmarks/registry.hpp"

#include <stdexcept>

namespace epx::bench {

void Registry::add(Subcommand command) {
  if (find(command.name) != nullptr)
    throw std::logic_error("epx-bench: subcommand '" + command.name + "' registered twice");
  commands_.push_back(std::move(command));
}

const Subcommand* Registry::find(const std::string& name) const {
  for (const Subcommand& c : commands_) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

}  // namespace epx::bench
