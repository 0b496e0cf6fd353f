// serve/: the KV cache's blocks, the step plan's encoding, and the
// scheduler's admission, chunked prefill and decode plans (no MPI: logits
// are made up here, so the sampled token is the argmax we choose).
#include <gtest/gtest.h>

#include <epx/error.hpp>

#include "serve/kv_cache.hpp"
#include "serve/scheduler.hpp"
#include "serve/step_plan.hpp"

using namespace epx::serve;

TEST(ServeKvCache, BlocksAreReservedAndFreed) {
  KvCache c(2, 8, 4, 10 * 2 * 2 * 4 * 8 * sizeof(float));  // exactly 10 blocks
  EXPECT_EQ(c.num_blocks(), 10);
  c.add(1, 9);  // 3 blocks
  EXPECT_EQ(c.free_blocks(), 7);
  EXPECT_EQ(c.capacity(1), 12);
  c.key(1, 1, 11)[7] = 3.0f;
  c.value(1, 0, 0)[0] = 4.0f;
  EXPECT_EQ(c.key(1, 1, 11)[7], 3.0f);
  EXPECT_THROW(c.key(1, 0, 12), epx::Error);
  EXPECT_THROW(c.add(2, 29), epx::Error);  // 8 blocks, 7 free
  c.add(2, 28);
  EXPECT_EQ(c.free_blocks(), 0);
  c.release(1);
  EXPECT_EQ(c.free_blocks(), 3);
  c.add(3, 12);
  // Another sequence's rows are its own.
  c.key(3, 1, 11)[7] = 5.0f;
  EXPECT_EQ(c.value(1 + 1, 0, 0) == c.value(3, 0, 0), false);
}

TEST(ServeStepPlan, RoundTrips) {
  StepPlan p;
  p.releases = {{4, 1}, {9, 0}};
  PlannedSegment s;
  s.seq = 11;
  s.owner = 2;
  s.start = 5;
  s.reserve = 40;
  s.want_logits = true;
  s.tokens = {1, 2, 255};
  p.segments = {s, PlannedSegment{}};
  const StepPlan q = decode(encode(p));
  EXPECT_FALSE(q.shutdown);
  ASSERT_EQ(q.releases.size(), 2u);
  EXPECT_EQ(q.releases[0].seq, 4);
  ASSERT_EQ(q.segments.size(), 2u);
  EXPECT_EQ(q.segments[0].tokens, s.tokens);
  EXPECT_EQ(q.segments[0].reserve, 40);
  EXPECT_EQ(q.tokens(), 3);
  EXPECT_EQ(q.logit_rows(2), 1);
  std::vector<std::int64_t> bad = encode(p);
  bad.pop_back();
  EXPECT_THROW(decode(bad), epx::Error);
}

namespace {

constexpr int kV = 256;

std::shared_ptr<Request> request(int prompt_len, int max_tokens) {
  RequestSpec s;
  s.prompt.assign(static_cast<std::size_t>(prompt_len), 'a');
  s.max_tokens = max_tokens;
  s.sampling.temperature = 0;
  return std::make_shared<Request>(s);
}

// Logits whose argmax is `token`, one row per logit row of `plan` (rank order).
std::vector<float> logits_for(const StepPlan& plan, int ranks, int token) {
  std::vector<float> l;
  for (int q = 0; q < ranks; ++q)
    for (std::int64_t i = 0; i < plan.logit_rows(q); ++i) {
      std::vector<float> row(kV, 0.0f);
      row[token] = 1.0f;
      l.insert(l.end(), row.begin(), row.end());
    }
  return l;
}

}  // namespace

TEST(ServeScheduler, PrefillsInChunksThenDecodesOneTokenAStep) {
  Metrics m(1, 1, 8, 100);
  SchedulerOptions o;
  o.blocks_per_rank = 100;
  o.block_size = 4;
  o.prefill_chunk = 4;
  Scheduler s(o, m);
  auto r = request(10, 3);
  ASSERT_EQ(s.submit(r), Admission::accepted);
  std::vector<std::int64_t> starts, counts;
  std::vector<bool> want;
  for (int step = 0; step < 10 && !r->done; ++step) {
    const StepPlan p = s.next_plan(std::chrono::milliseconds(0));
    for (const auto& g : p.segments) {
      starts.push_back(g.start);
      counts.push_back(static_cast<std::int64_t>(g.tokens.size()));
      want.push_back(g.want_logits);
      if (g.start == 0) {
        EXPECT_EQ(g.reserve, 13);
      }
    }
    s.apply(p, logits_for(p, 1, 'z'));
  }
  EXPECT_EQ(starts, (std::vector<std::int64_t>{0, 4, 8, 10, 11}));
  EXPECT_EQ(counts, (std::vector<std::int64_t>{4, 4, 2, 1, 1}));
  EXPECT_EQ(want, (std::vector<bool>{false, false, true, true, true}));
  EXPECT_TRUE(r->done);
  EXPECT_EQ(r->finish_reason, "length");
  EXPECT_EQ(r->text, "zzz");
  // The next plan frees its blocks.
  const StepPlan p = s.next_plan(std::chrono::milliseconds(0));
  ASSERT_EQ(p.releases.size(), 1u);
}

TEST(ServeScheduler, AdmitsWhereTheBlocksAreAndRefusesPastTheQueue) {
  Metrics m(2, 1, 8, 10);
  SchedulerOptions o;
  o.num_ranks = 2;
  o.blocks_per_rank = 10;
  o.block_size = 4;
  o.max_batch = 2;
  o.max_queue = 1;
  Scheduler s(o, m);
  auto a = request(20, 12), b = request(20, 12), c = request(4, 4), d = request(4, 4);
  EXPECT_EQ(s.submit(a), Admission::accepted);  // 8 blocks
  EXPECT_EQ(s.submit(b), Admission::accepted);
  EXPECT_EQ(s.submit(c), Admission::accepted);
  EXPECT_EQ(s.submit(d), Admission::queue_full);  // 2 may run, 1 may wait
  const StepPlan p = s.next_plan(std::chrono::milliseconds(0));
  ASSERT_EQ(p.segments.size(), 2u);                     // max_batch
  EXPECT_NE(p.segments[0].owner, p.segments[1].owner);  // the rank with more free blocks
  s.drain();
  EXPECT_EQ(s.submit(request(4, 4)), Admission::draining);
  s.stop_now();
  const StepPlan q = s.next_plan(std::chrono::milliseconds(0));
  EXPECT_TRUE(q.shutdown);
  EXPECT_EQ(q.releases.size(), 2u);
  for (auto* r : {a.get(), b.get(), c.get()}) {
    EXPECT_TRUE(r->done);
    EXPECT_EQ(r->finish_reason, "cancelled");
  }
}

TEST(ServeScheduler, ACancelledRequestIsDroppedAndItsBlocksFreed) {
  Metrics m(1, 1, 8, 4);
  SchedulerOptions o;
  o.blocks_per_rank = 4;
  o.block_size = 4;
  o.max_batch = 4;
  Scheduler s(o, m);
  auto a = request(8, 8), b = request(8, 8);  // 4 blocks each: one at a time
  s.submit(a);
  s.submit(b);
  StepPlan p = s.next_plan(std::chrono::milliseconds(0));
  ASSERT_EQ(p.segments.size(), 1u);
  s.apply(p, logits_for(p, 1, 'q'));
  a->cancelled = true;
  p = s.next_plan(std::chrono::milliseconds(0));
  EXPECT_EQ(a->finish_reason, "cancelled");
  ASSERT_EQ(p.releases.size(), 1u);
  ASSERT_EQ(p.segments.size(), 1u);  // b got a's blocks
  EXPECT_EQ(p.segments[0].reserve, 16);
}

TEST(ServeMetrics, PrometheusTextWithCumulativeBuckets) {
  Metrics m(2, 1, 2, 10);
  m.first_token(0.003);
  m.first_token(0.2);
  m.first_token(100.0);
  m.request_finished("stop", 5, 7);
  m.request_rejected("queue_full");
  m.step(3, 12, 3, 1, {4, 2});
  m.expert_tokens({5, 6});
  const std::string t = m.prometheus();
  for (const char* line :
       {"epx_time_to_first_token_seconds_bucket{le=\"0.0025\"} 0\n",
        "epx_time_to_first_token_seconds_bucket{le=\"0.005\"} 1\n",
        "epx_time_to_first_token_seconds_bucket{le=\"0.25\"} 2\n",
        "epx_time_to_first_token_seconds_bucket{le=\"60\"} 2\n",
        "epx_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\n",
        "epx_time_to_first_token_seconds_count 3\n",
        "epx_requests_total{finish_reason=\"stop\"} 1\n",
        "epx_requests_rejected_total{reason=\"queue_full\"} 1\n", "epx_prompt_tokens_total 5\n",
        "epx_generation_tokens_total 7\n", "epx_kv_blocks_used{rank=\"1\"} 2\n",
        "epx_expert_tokens_total{moe_layer=\"0\",expert=\"1\"} 6\n",
        "# TYPE epx_batch_size gauge\n"})
    EXPECT_NE(t.find(line), std::string::npos) << line << " not in:\n" << t;
}
