#include "serve/step_plan.hpp"

#include "core/check.hpp"

namespace epx::serve {

namespace {
constexpr std::int64_t kMagic = 0x65707873;  // "epxs": catches a message read out of step
}

std::int64_t StepPlan::tokens() const {
  std::int64_t n = 0;
  for (const PlannedSegment& s : segments) n += static_cast<std::int64_t>(s.tokens.size());
  return n;
}

std::int64_t StepPlan::logit_rows(int rank) const {
  std::int64_t n = 0;
  for (const PlannedSegment& s : segments) n += s.owner == rank && s.want_logits;
  return n;
}

// [magic, shutdown, releases, segments, (seq, owner) per release,
//  (seq, owner, start, reserve, want_logits, count, tokens...) per segment]
std::vector<std::int64_t> encode(const StepPlan& p) {
  std::vector<std::int64_t> m{kMagic, p.shutdown ? 1 : 0,
                              static_cast<std::int64_t>(p.releases.size()),
                              static_cast<std::int64_t>(p.segments.size())};
  for (const Release& r : p.releases) m.insert(m.end(), {r.seq, r.owner});
  for (const PlannedSegment& s : p.segments) {
    m.insert(m.end(), {s.seq, s.owner, s.start, s.reserve, s.want_logits ? 1 : 0,
                       static_cast<std::int64_t>(s.tokens.size())});
    m.insert(m.end(), s.tokens.begin(), s.tokens.end());
  }
  return m;
}

StepPlan decode(const std::vector<std::int64_t>& m) {
  std::size_t i = 0;
  const auto next = [&]() {
    EPX_CHECK(i < m.size(), Internal, "serve: step plan of ", m.size(), " values is truncated");
    return m[i++];
  };
  EPX_CHECK(next() == kMagic, Internal, "serve: step plan without its magic number");
  StepPlan p;
  p.shutdown = next() != 0;
  const std::int64_t nr = next(), ns = next();
  for (std::int64_t r = 0; r < nr; ++r) {
    Release x;
    x.seq = next();
    x.owner = static_cast<int>(next());
    p.releases.push_back(x);
  }
  for (std::int64_t s = 0; s < ns; ++s) {
    PlannedSegment x;
    x.seq = next();
    x.owner = static_cast<int>(next());
    x.start = next();
    x.reserve = next();
    x.want_logits = next() != 0;
    const std::int64_t n = next();
    for (std::int64_t t = 0; t < n; ++t) x.tokens.push_back(static_cast<std::int32_t>(next()));
    p.segments.push_back(std::move(x));
  }
  EPX_CHECK_EQ(i, m.size(), Internal, "serve: step plan has trailing values");
  return p;
}

}  // namespace epx::serve
