#include "benchmarks/pipeline_costs.hpp"

namespace epx::bench {

void add_cost_options(OptionSet& o, const pipeline::Costs& d, const std::string& unit) {
  o.add_double("cost-f", d.f, 0, 1e12, "forward time of 1/P of the model" + unit);
  o.add_double("cost-b", d.b, 0, 1e12, "full backward time (input and weight grads)" + unit);
  o.add_double("cost-w", d.w, 0, 1e12, "weight-grad part of the backward" + unit);
  o.add_double("cost-fb", d.fb, 0, 1e12,
               "overlapped forward + backward unit; the default -1 stands for cost-f + cost-b" +
                   unit);
  o.add_double("cost-p2p", d.p2p, 0, 1e12,
               "latency of one activation or gradient between ranks" + unit);
}

pipeline::Costs costs_from(const OptionSet& o) {
  pipeline::Costs c;
  c.f = o.get_double("cost-f");
  c.b = o.get_double("cost-b");
  c.w = o.get_double("cost-w");
  c.fb = o.get_double("cost-fb");
  c.p2p = o.get_double("cost-p2p");
  return c;
}

}  // namespace epx::bench
