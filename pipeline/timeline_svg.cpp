// timeline_svg(): a Gantt chart of a simulation, one row per rank. Plain SVG
// text, no dependencies, so that docs and tools can regenerate pictures.
#include <algorithm>
#include <iomanip>
#include <sstream>

#include <epx/pipeline_tools.hpp>

#include "core/check.hpp"

namespace epx::pipeline {

namespace {

constexpr double kRowHeight = 26.0;
constexpr double kRowGap = 6.0;
constexpr double kLeft = 64.0;
constexpr double kTop = 34.0;
constexpr double kChartWidth = 1200.0;
constexpr double kMarkHeight = 6.0;
constexpr const char* kMarkColour = "#222222";

// Chunk 1 (the second chunk of DualPipe/DualPipeV) in a lighter shade.
const char* fill(OpKind kind, int chunk) {
  const bool second = chunk > 0;
  switch (kind) {
    case OpKind::F:
      return second ? "#a0cbe8" : "#4e79a7";
    case OpKind::B:
      return second ? "#8cd17d" : "#59a14f";
    case OpKind::Bi:
      return second ? "#f7e3a1" : "#f1ce63";
    case OpKind::W:
      return second ? "#d4a6c8" : "#b07aa1";
    case OpKind::FB:
      break;  // drawn as its two halves
  }
  return "#cccccc";
}

class Svg {
 public:
  explicit Svg(double scale) : scale_(scale) { os_ << std::fixed << std::setprecision(1); }

  void box(double x, double y, double w, const char* colour, double stroke = 0.5) {
    os_ << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << w << "\" height=\"" << kRowHeight
        << "\" fill=\"" << colour << "\" stroke=\"#222\" stroke-width=\"" << stroke << "\"/>\n";
  }
  void text(double x, double y, const std::string& s, const char* anchor = "middle",
            int size = 10) {
    os_ << "<text x=\"" << x << "\" y=\"" << y << "\" font-size=\"" << size << "\" text-anchor=\""
        << anchor << "\">" << s << "</text>\n";
  }
  void bar(double x, double y, double w, double h, const char* colour) {
    os_ << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << w << "\" height=\"" << h
        << "\" fill=\"" << colour << "\"/>\n";
  }
  double x(double t) const { return kLeft + t * scale_; }
  double scale() const { return scale_; }
  std::ostringstream& out() { return os_; }

 private:
  double scale_;
  std::ostringstream os_;
};

void draw_op(Svg& svg, const Op& op, const OpTime& t, double y) {
  const double x0 = svg.x(t.start);
  const double w = (t.end - t.start) * svg.scale();
  if (op.kind == OpKind::FB) {
    // Two halves in one heavy border: the forward's colour, then the backward's.
    svg.box(x0, y, w / 2, fill(OpKind::F, op.chunk));
    svg.box(x0 + w / 2, y, w / 2, fill(OpKind::B, op.b_chunk));
    svg.box(x0, y, w, "none", 2.0);
    svg.text(x0 + w / 2, y + kRowHeight / 2 + 4,
             std::to_string(op.mb) + "|" + std::to_string(op.b_mb));
    return;
  }
  svg.box(x0, y, w, fill(op.kind, op.chunk));
  if (w >= 10) svg.text(x0 + w / 2, y + kRowHeight / 2 + 4, std::to_string(op.mb));
}

}  // namespace

std::string timeline_svg(const Schedule& schedule, const Simulation& sim,
                         const std::vector<std::vector<OpTime>>& marks) {
  EPX_CHECK_EQ(sim.times.size(), schedule.ops.size(), InvalidArgument,
               "timeline_svg: the simulation is of another schedule (ranks differ)");
  EPX_CHECK(marks.empty() || marks.size() == schedule.ops.size(), InvalidArgument,
            "timeline_svg: marks for ", marks.size(), " ranks, the schedule has ",
            schedule.ops.size());
  const double span = std::max(sim.makespan, 1e-9);
  Svg svg(kChartWidth / span);
  const double rows = schedule.ranks * (kRowHeight + kRowGap);
  const double height = kTop + rows + 66;
  const double width = kLeft + kChartWidth + 20;
  std::ostringstream head;
  head << std::fixed << std::setprecision(1) << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\""
       << width << "\" height=\"" << height << "\" font-family=\"sans-serif\">\n"
       << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  std::ostringstream title;
  title << to_string(schedule.kind) << ": " << schedule.ranks << " ranks, " << schedule.microbatches
        << " micro-batches, makespan " << sim.makespan << ", max bubble " << sim.max_bubble;
  svg.text(kLeft, 20, title.str(), "start", 14);
  for (int r = 0; r < schedule.ranks; ++r) {
    const double y = kTop + r * (kRowHeight + kRowGap);
    svg.text(kLeft - 8, y + kRowHeight / 2 + 4, "rank " + std::to_string(r), "end", 12);
    for (std::size_t i = 0; i < schedule.ops[r].size(); ++i)
      draw_op(svg, schedule.ops[r][i], sim.times[r][i], y);
    if (!marks.empty())
      for (const OpTime& m : marks[r])
        svg.bar(svg.x(m.start), y + kRowHeight - kMarkHeight,
                std::max(0.5, (m.end - m.start) * svg.scale()), kMarkHeight, kMarkColour);
  }
  // Legend: one swatch per kind, then the FB unit and the chunk shading.
  const double ly = kTop + rows + 14;
  const double ty = ly + kRowHeight / 2 + 4;
  const OpKind kinds[] = {OpKind::F, OpKind::B, OpKind::Bi, OpKind::W};
  const char* labels[] = {"F forward", "B backward", "Bi input grad", "W weight grad"};
  for (int k = 0; k < 4; ++k) {
    const double lx = kLeft + k * 150;
    svg.box(lx, ly, 22, fill(kinds[k], 0));
    svg.text(lx + 28, ty, labels[k], "start", 12);
  }
  const double fx = kLeft + 4 * 150;
  svg.box(fx, ly, 11, fill(OpKind::F, 0));
  svg.box(fx + 11, ly, 11, fill(OpKind::B, 1));
  svg.box(fx, ly, 22, "none", 2.0);
  svg.text(fx + 28, ty, "FB: F of one micro-batch overlapped with B of another (f|b)", "start", 12);
  svg.text(kLeft + kChartWidth, ty + 20, "lighter shade: a rank's second chunk", "end", 11);
  if (!marks.empty()) {
    svg.bar(kLeft, ty + 12, 22, kMarkHeight, kMarkColour);
    svg.text(kLeft + 28, ty + 20, "EP comm: a dispatch or combine call inside the op", "start", 11);
  }
  return head.str() + svg.out().str() + "</svg>\n";
}

}  // namespace epx::pipeline
