#include "train/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/check.hpp"

namespace epx::train {

double load_max_over_mean(const std::vector<std::int64_t>& counts) {
  if (counts.empty()) return 0;
  std::int64_t sum = 0, most = 0;
  for (const std::int64_t c : counts) {
    sum += c;
    most = std::max(most, c);
  }
  if (sum == 0) return 0;
  return static_cast<double>(most) * static_cast<double>(counts.size()) / static_cast<double>(sum);
}

std::string progress_line(const StepResult& r, std::int64_t max_steps) {
  char buf[256];
  const double ms = r.seconds * 1e3, ep = r.ep_seconds * 1e3, dp = r.dp_seconds * 1e3;
  std::snprintf(buf, sizeof buf,
                "step %lld/%lld | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | %.1f ms "
                "(compute %.1f, ep %.1f, dp %.1f)",
                static_cast<long long>(r.step), static_cast<long long>(max_steps), r.loss, r.lr,
                r.grad_norm, r.tokens_per_s, ms, std::max(0.0, ms - ep - dp), ep, dp);
  return buf;
}

std::string rebalance_line(const RebalanceReport& r) {
  std::ostringstream s;
  char buf[64];
  s << "rebalance at step " << r.step << ": max/mean GPU load per MoE layer ";
  for (std::size_t l = 0; l < r.before.size(); ++l) {
    std::snprintf(buf, sizeof buf, "%s%.2f -> %.2f (EPLB %.2f)", l ? ", " : "", r.before[l],
                  r.after[l], r.eplb[l]);
    s << buf;
  }
  std::snprintf(buf, sizeof buf, "; moved %.2f MiB (%.2f MiB without slot matching) in %.1f ms",
                static_cast<double>(r.moved_bytes) / (1 << 20),
                static_cast<double>(r.naive_bytes) / (1 << 20), r.seconds * 1e3);
  s << buf;
  if (r.checked)
    s << "; replicas checked: every copy of every expert bit-identical, weights and moments, "
         "as before the migration";
  return s.str();
}

void History::add(const StepResult& r) {
  steps.push_back(r.step);
  losses.push_back(r.loss);
  std::vector<double> l;
  for (const auto& c : r.expert_counts) l.push_back(load_max_over_mean(c));
  load.push_back(std::move(l));
  rank_load.push_back(r.rank_pairs_max_over_mean);
  for (const RebalanceReport& b : r.rebalances) rebalance_steps.push_back(b.step);
}

MetricsLog::MetricsLog(const std::string& path, std::int64_t resume_step, History& history) {
  if (path.empty()) return;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::vector<std::string> kept;
  if (resume_step > 0) {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;
      const std::int64_t step = j["step"].get<std::int64_t>();
      if (step > resume_step) continue;
      kept.push_back(line);
      StepResult r;
      r.step = step;
      r.loss = j.value("loss", 0.0);
      r.rank_pairs_max_over_mean = j.value("rank_pairs_max_over_mean", 0.0);
      if (j.contains("rebalance")) {
        r.rebalances.emplace_back();
        r.rebalances.back().step = step;
      }
      if (j.contains("expert_counts")) r.expert_counts = j["expert_counts"].get<std::vector<std::vector<std::int64_t>>>();
      history.add(r);
      if (j.contains("eval_loss")) {
        history.eval_steps.push_back(step);
        history.eval_losses.push_back(j["eval_loss"].get<double>());
      }
    }
  }
  out_.open(path, std::ios::trunc);
  EPX_CHECK(out_.good(), InvalidArgument, "config: log.metrics = '", path, "' cannot be written");
  for (const std::string& line : kept) out_ << line << '\n';
  out_.flush();
}

void MetricsLog::write(const StepResult& r, double eval_loss) {
  if (!out_.is_open()) return;
  nlohmann::json j;
  j["step"] = r.step;
  j["loss"] = r.loss;
  j["lr"] = r.lr;
  j["grad_norm"] = r.grad_norm;
  j["tokens_per_s"] = r.tokens_per_s;
  j["ms"] = {{"total", r.seconds * 1e3},
             {"compute", std::max(0.0, (r.seconds - r.ep_seconds - r.dp_seconds) * 1e3)},
             {"ep", r.ep_seconds * 1e3},
             {"dp", r.dp_seconds * 1e3}};
  j["expert_counts"] = r.expert_counts;
  std::vector<double> load;
  for (const auto& c : r.expert_counts) load.push_back(load_max_over_mean(c));
  j["expert_load_max_over_mean"] = load;
  j["rank_pairs_max_over_mean"] = r.rank_pairs_max_over_mean;
  j["expert_ms"] = {{"max", r.expert_seconds_max * 1e3}, {"mean", r.expert_seconds_mean * 1e3}};
  for (const RebalanceReport& b : r.rebalances)
    j["rebalance"] = {{"gpu_load_max_over_mean_before", b.before},
                      {"gpu_load_max_over_mean_after", b.after},
                      {"gpu_load_max_over_mean_eplb", b.eplb},
                      {"moved_bytes", b.moved_bytes},
                      {"naive_bytes", b.naive_bytes},
                      {"ms", b.seconds * 1e3}};
  if (eval_loss >= 0) j["eval_loss"] = eval_loss;
  out_ << j.dump() << '\n';
  out_.flush();
}

namespace {

// One chart: x from x0 to x1, y from y0 to y1, into a box at (left, top).
struct Chart {
  double left, top, width, height, x0, x1, y0, y1;
  double px(double x) const { return left + (x1 > x0 ? (x - x0) / (x1 - x0) : 0) * width; }
  double py(double y) const { return top + height - (y1 > y0 ? (y - y0) / (y1 - y0) : 0) * height; }
};

void axes(std::ostringstream& s, const Chart& c, const std::string& title, const std::string& ylabel) {
  s << "<rect x='" << c.left << "' y='" << c.top << "' width='" << c.width << "' height='"
    << c.height << "' fill='none' stroke='#888'/>\n";
  s << "<text x='" << c.left << "' y='" << c.top - 8 << "' font-size='14'>" << title << "</text>\n";
  for (int i = 0; i <= 4; ++i) {
    const double y = c.y0 + (c.y1 - c.y0) * i / 4, x = c.x0 + (c.x1 - c.x0) * i / 4;
    s << "<text x='" << c.left - 6 << "' y='" << c.py(y) + 4
      << "' font-size='11' text-anchor='end'>" << std::round(y * 100) / 100 << "</text>\n";
    s << "<text x='" << c.px(x) << "' y='" << c.top + c.height + 16
      << "' font-size='11' text-anchor='middle'>" << std::llround(x) << "</text>\n";
  }
  s << "<text x='" << c.left + c.width / 2 << "' y='" << c.top + c.height + 32
    << "' font-size='12' text-anchor='middle'>step</text>\n";
  s << "<text x='" << c.left - 44 << "' y='" << c.top + c.height / 2
    << "' font-size='12' transform='rotate(-90 " << c.left - 44 << ' ' << c.top + c.height / 2
    << ")' text-anchor='middle'>" << ylabel << "</text>\n";
}

void polyline(std::ostringstream& s, const Chart& c, const std::vector<std::int64_t>& x,
              const std::vector<double>& y, const char* color) {
  s << "<polyline fill='none' stroke='" << color << "' stroke-width='1.5' points='";
  for (std::size_t i = 0; i < x.size(); ++i) s << c.px(static_cast<double>(x[i])) << ',' << c.py(y[i]) << ' ';
  s << "'/>\n";
}

}  // namespace

void write_report_svg(const std::string& path, const History& h, const std::string& title) {
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                  "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};
  std::ostringstream s;
  const double W = 900, H = 720;
  s << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' font-family='sans-serif'>\n<rect width='100%' height='100%' fill='white'/>\n";
  s << "<text x='20' y='28' font-size='16'>" << title << "</text>\n";
  const double x0 = h.steps.empty() ? 0 : static_cast<double>(h.steps.front());
  const double x1 = h.steps.empty() ? 1 : static_cast<double>(std::max<std::int64_t>(h.steps.back(), 1));
  double lo = 1e300, hi = -1e300;
  for (const double v : h.losses) lo = std::min(lo, v), hi = std::max(hi, v);
  for (const double v : h.eval_losses) lo = std::min(lo, v), hi = std::max(hi, v);
  if (h.unigram_entropy > 0) lo = std::min(lo, h.unigram_entropy), hi = std::max(hi, h.unigram_entropy);
  if (lo > hi) lo = 0, hi = 1;
  const Chart loss{90, 70, 760, 260, x0, x1, std::floor(lo * 4) / 4, std::ceil(hi * 4) / 4};
  axes(s, loss, "loss (blue: train, red: eval, grey: unigram entropy)", "nats / token");
  polyline(s, loss, h.steps, h.losses, kColors[0]);
  for (std::size_t i = 0; i < h.eval_steps.size(); ++i)
    s << "<circle cx='" << loss.px(static_cast<double>(h.eval_steps[i])) << "' cy='"
      << loss.py(h.eval_losses[i]) << "' r='4' fill='" << kColors[1] << "'/>\n";
  if (h.unigram_entropy > 0)
    s << "<line x1='" << loss.left << "' x2='" << loss.left + loss.width << "' y1='"
      << loss.py(h.unigram_entropy) << "' y2='" << loss.py(h.unigram_entropy)
      << "' stroke='#999' stroke-dasharray='4 3'/>\n";

  const std::size_t layers = h.load.empty() ? 0 : h.load.front().size();
  double lhi = 1;
  for (const auto& row : h.load)
    for (const double v : row) lhi = std::max(lhi, v);
  for (const double v : h.rank_load) lhi = std::max(lhi, v);
  const Chart load{90, 420, 760, 230, x0, x1, 1.0, std::ceil(lhi * 2) / 2};
  axes(s, load,
       "expert load, max / mean: tokens per expert per MoE layer, and (black) expert rows per rank",
       "max / mean");
  for (const std::int64_t b : h.rebalance_steps)
    s << "<line x1='" << load.px(static_cast<double>(b)) << "' x2='"
      << load.px(static_cast<double>(b)) << "' y1='" << load.top << "' y2='"
      << load.top + load.height << "' stroke='#bbb' stroke-dasharray='3 3'/>\n";
  if (!h.rank_load.empty() && h.rank_load.size() == h.steps.size())
    polyline(s, load, h.steps, h.rank_load, "#000");
  for (std::size_t l = 0; l < layers; ++l) {
    std::vector<double> y;
    for (const auto& row : h.load) y.push_back(row[l]);
    polyline(s, load, h.steps, y, kColors[l % 8]);
    s << "<text x='" << load.left + 10 << "' y='" << load.top + 16 + 14 * l
      << "' font-size='11' fill='" << kColors[l % 8] << "'>MoE layer " << l << "</text>\n";
  }
  s << "</svg>\n";
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::ofstream out(path, std::ios::trunc);
  out << s.str();
  EPX_CHECK(out.good(), InvalidArgument, "report: cannot write ", path);
}

}  // namespace epx::train
