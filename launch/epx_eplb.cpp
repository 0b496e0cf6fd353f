// epx-eplb: the offline planner. Reads recorded expert loads (JSON), computes
// a placement with epx::balancer::rebalance_experts and writes it as JSON.
// Any error is one line on stderr and a non-zero exit (2: usage, 1: input).
#include <algorithm>
#include <charconv>
#include <epx/balancer.hpp>
#include <epx/error.hpp>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>

#include "launch/eplb_json.hpp"

namespace {

const char* const kHelp =
    "usage: epx-eplb --input LOAD.json --replicas P --groups G --nodes N --gpus K\n"
    "                [--policy balanced|eplb] [--output OUT.json]\n"
    "\n"
    "Decides how many replicas each expert of each MoE layer gets and which GPU holds\n"
    "each replica, from recorded token counts per expert.\n"
    "\n"
    "  --input LOAD.json  {\"weight\": [[...], ...]}: one row per layer, one load (tokens,\n"
    "                     integer or not, >= 0) per logical expert\n"
    "  --replicas P       physical expert slots per layer (>= experts, a multiple of K)\n"
    "  --groups G         expert groups (experts a multiple of G); when G is a multiple\n"
    "                     of N, all replicas of a group stay on one node (hierarchical)\n"
    "  --nodes N          nodes (K a multiple of N)\n"
    "  --gpus K           GPUs (ranks); slot p lives on GPU p / (P/K), GPUs node-major\n"
    "  --policy NAME      balanced (default): never worse than eplb, usually better;\n"
    "                     eplb: DeepSeek EPLB exactly\n"
    "  --output OUT.json  where to write the placement (default: stdout)\n"
    "  --help, -h         this text\n"
    "P, G, N and K are at most 65536 each.\n"
    "\n"
    "Output, one line of JSON: phy2log [L][P], log2phy [L][E][maxcnt] (slots ascending,\n"
    "-1 padded), logcnt [L][E], gpu_max_over_mean [L], same_gpu_duplicates [L], policy.\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string input, output;
  int replicas = 0, groups = 0, nodes = 0, gpus = 0;
  epx::balancer::Policy policy = epx::balancer::Policy::balanced;
};

// The sizes are bounded: the planner's time grows faster than linearly in the
// slots (1M replicas ran past a minute), and 65536 slots per layer is far
// beyond any deployment (DeepSeek-V3 plans 288 on 256 GPUs).
constexpr int kMaxSize = 1 << 16;

int parse_int(const std::string& flag, const std::string& text) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range || (ec == std::errc() && value > kMaxSize))
    throw UsageError(flag + " = '" + text + "', expected at most " + std::to_string(kMaxSize) +
                     " (epx-eplb's bound on every size)");
  if (ec != std::errc() || end != text.data() + text.size() || value < 1)
    throw UsageError(flag + " = '" + text + "', expected a positive integer");
  return value;
}

Options parse_options(int argc, char** argv) {
  std::map<std::string, std::string> given;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    std::string value;
    if (const auto eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      throw UsageError(flag + " needs a value");
    }
    static const char* const kFlags[] = {"--input", "--output", "--replicas", "--groups",
                                         "--nodes", "--gpus",   "--policy"};
    if (std::find(std::begin(kFlags), std::end(kFlags), flag) == std::end(kFlags))
      throw UsageError("unknown option '" + flag + "'");
    if (given.count(flag)) throw UsageError(flag + " given twice");
    given[flag] = value;
  }
  for (const char* required : {"--input", "--replicas", "--groups", "--nodes", "--gpus"}) {
    if (!given.count(required)) throw UsageError(std::string("missing ") + required);
  }
  Options o;
  o.input = given["--input"];
  o.output = given.count("--output") ? given["--output"] : "";
  o.replicas = parse_int("--replicas", given["--replicas"]);
  o.groups = parse_int("--groups", given["--groups"]);
  o.nodes = parse_int("--nodes", given["--nodes"]);
  o.gpus = parse_int("--gpus", given["--gpus"]);
  if (given.count("--policy")) {
    const std::string& p = given["--policy"];
    if (p == "balanced")
      o.policy = epx::balancer::Policy::balanced;
    else if (p == "eplb")
      o.policy = epx::balancer::Policy::eplb;
    else
      throw UsageError("--policy = '" + p + "', expected balanced or eplb");
  }
  return o;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read --input " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Messages are printed on one line whatever they contain.
std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << kHelp;
      return 0;
    }
  }
  try {
    const Options o = parse_options(argc, argv);
    const epx::Tensor load = epx::launch::parse_load_json(read_file(o.input));
    const epx::balancer::Placement placement =
        epx::balancer::rebalance_experts(load, o.replicas, o.groups, o.nodes, o.gpus, o.policy);
    const std::string json = epx::launch::placement_json(
        placement, epx::balancer::evaluate_placement(load, placement, o.gpus), o.policy);
    if (o.output.empty()) {
      std::cout << json;
    } else {
      std::ofstream out(o.output, std::ios::binary);
      out << json;
      out.close();
      if (!out) throw std::runtime_error("cannot write --output " + o.output);
    }
    return 0;
  } catch (const UsageError& e) {
    std::cerr << "epx-eplb: " << one_line(e.what()) << " (see epx-eplb --help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "epx-eplb: " << one_line(e.what()) << "\n";
    return 1;
  }
}
