#include "benchmarks/pipeline_report.hpp"

#include <iomanip>

namespace epx::bench {

namespace {

template <class T>
void json_array(std::ostream& os, const std::vector<T>& values) {
  os << '[';
  for (std::size_t i = 0; i < values.size(); ++i) os << (i ? "," : "") << values[i];
  os << ']';
}

// Reasons and error text may hold quotes; nothing else needs escaping here.
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::vector<double> peak_activations(const PipelineReport& r) {
  const double unit = r.schedule.chunk_fraction * r.schedule.ranks;
  std::vector<double> out;
  for (int peak : r.simulation.peak_activations) out.push_back(peak * unit);
  return out;
}

void print_table(std::ostream& os, const PipelineReport& r) {
  const pipeline::Schedule& s = r.schedule;
  const pipeline::Simulation& sim = r.simulation;
  const pipeline::Costs& c = r.costs;
  os << "epx-bench pipeline: " << pipeline::to_string(s.kind) << ", " << s.ranks << " ranks, "
     << s.microbatches << " micro-batches, " << s.stages << " stages (" << s.chunks_per_rank
     << " chunk" << (s.chunks_per_rank > 1 ? "s" : "") << " per rank)\n"
     << "costs per chunk: F " << c.f << "  B " << c.b << "  W " << c.w << "  FB "
     << (c.fb < 0 ? c.f + c.b : c.fb) << "  comm " << c.comm << "  p2p " << c.p2p << "\n"
     << "makespan " << sim.makespan << "  max bubble " << sim.max_bubble << "  weight copies "
     << sim.param_copies << "  comm hidden " << sim.total_comm_hidden << "\n\n";
  const std::vector<double> peaks = peak_activations(r);
  os << std::left << std::setw(6) << "rank" << std::setw(10) << "busy" << std::setw(10) << "bubble"
     << std::setw(12) << "peak_act"
     << "comm_hidden\n";
  for (int rank = 0; rank < s.ranks; ++rank) {
    os << std::setw(6) << rank << std::setw(10) << sim.busy[rank] << std::setw(10)
       << sim.bubble[rank] << std::setw(12) << peaks[rank] << sim.comm_hidden[rank] << "\n";
  }
  os << "(peak_act: micro-batches x 1/" << s.ranks << " of the model)\n";
  if (!r.automatic) return;
  os << "\nauto: " << r.reason << "\n\n"
     << std::setw(11) << "schedule" << std::setw(10) << "makespan" << std::setw(10) << "peak_act"
     << "note\n";
  for (const pipeline::AutoCandidate& cand : r.candidates) {
    os << std::setw(11) << pipeline::to_string(cand.kind);
    if (cand.possible) {
      os << std::setw(10) << cand.makespan << std::setw(10) << cand.peak_activations;
    } else {
      os << std::setw(10) << "-" << std::setw(10) << "-";
    }
    os << cand.note << "\n";
  }
}

void print_json(std::ostream& os, const PipelineReport& r) {
  const pipeline::Schedule& s = r.schedule;
  const pipeline::Simulation& sim = r.simulation;
  const pipeline::Costs& c = r.costs;
  os << "{\"schedule\":\"" << pipeline::to_string(s.kind) << "\",\"ranks\":" << s.ranks
     << ",\"microbatches\":" << s.microbatches << ",\"stages\":" << s.stages
     << ",\"chunks_per_rank\":" << s.chunks_per_rank << ",\"costs_per_chunk\":{\"f\":" << c.f
     << ",\"b\":" << c.b << ",\"w\":" << c.w << ",\"fb\":" << (c.fb < 0 ? c.f + c.b : c.fb)
     << ",\"comm\":" << c.comm << ",\"p2p\":" << c.p2p << "},\"makespan\":" << sim.makespan
     << ",\"max_bubble\":" << sim.max_bubble << ",\"bubble\":";
  json_array(os, sim.bubble);
  os << ",\"busy\":";
  json_array(os, sim.busy);
  os << ",\"peak_activations\":";
  json_array(os, peak_activations(r));
  os << ",\"activation_unit\":\"micro-batch x 1/" << s.ranks << " of the model\""
     << ",\"peak_chunks\":";
  json_array(os, sim.peak_activations);
  os << ",\"param_copies\":" << sim.param_copies << ",\"comm_hidden\":" << sim.total_comm_hidden
     << ",\"comm_hidden_per_rank\":";
  json_array(os, sim.comm_hidden);
  if (r.memory_budget > 0) os << ",\"memory_budget\":" << r.memory_budget;
  if (r.automatic) {
    os << ",\"reason\":" << json_string(r.reason) << ",\"candidates\":[";
    for (std::size_t i = 0; i < r.candidates.size(); ++i) {
      const pipeline::AutoCandidate& cand = r.candidates[i];
      os << (i ? "," : "") << "{\"schedule\":\"" << pipeline::to_string(cand.kind)
         << "\",\"possible\":" << (cand.possible ? "true" : "false")
         << ",\"fits\":" << (cand.fits ? "true" : "false");
      if (cand.possible)
        os << ",\"makespan\":" << cand.makespan
           << ",\"peak_activations\":" << cand.peak_activations;
      os << ",\"note\":" << json_string(cand.note) << "}";
    }
    os << "]";
  }
  os << "}\n";
}

}  // namespace epx::bench
