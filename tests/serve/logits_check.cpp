// An independent check of the serving forward: the logits of the first
// generated token (the prompt's last position) against the training
// engine's forward (model::Engine::forward_loss, the code that the PyTorch
// reference checks loss for loss). forward_loss gives only losses, so the
// prompt runs V times with the last target set to each token v: every other
// term is the same bits in every run, so loss_0 - loss_v = logit_v - logit_0.
// Also: a prompt prefilled in chunks of 1, 3 and 7 gives the same bits as in
// one piece with --deterministic kernels, and the same logits to 1e-5
// without; and decode steps through the low-latency dispatch and combine
// give the same bits as through the normal mode, with and without the
// two-batch overlap.
// With --fp8 (hidden a multiple of 128) every serve forward dispatches e4m3
// rows with 1x128 scales and the training forward runs with fp8_dispatch:
// the logits must match it to 1e-5 of their range, and be more than 1e-4
// away from the f32 forward's somewhere (the rows were quantised); the
// chunking and low-latency checks stay as above.
//
//   epxrun -n N -- serve_logits_check STEP_DIR [--fp8]   (prints "serve logits: OK ...", exits 0)
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <mpi.h>

#include <nlohmann/json.hpp>

#include <epx/comm.hpp>
#include <epx/group.hpp>

#include "model/engine.hpp"
#include "model/load_weights.hpp"
#include "serve/forward.hpp"
#include "serve/sampler.hpp"
#include "train/config.hpp"

using namespace epx;

namespace {

// The prompt's last-position logits through serve::Forward, prefilled `chunk` tokens at a time.
std::vector<float> serve_logits(model::Model& m, comm::Buffer& buf,
                                const std::vector<std::int32_t>& prompt, int chunk, bool det,
                                bool fp8, int rank) {
  serve::KvCache cache(m.config().num_layers, m.config().hidden_size, 4, std::size_t{4} << 20);
  serve::Forward f(m, buf, cache, det, fp8);
  const auto P = static_cast<std::int64_t>(prompt.size());
  if (rank == 0) cache.add(7, P);
  std::vector<float> logits;
  for (std::int64_t at = 0; at < P; at += chunk) {
    std::vector<serve::Segment> segs;
    const std::int64_t n = std::min<std::int64_t>(chunk, P - at);
    if (rank == 0) segs.push_back({7, at, prompt.data() + at, n, at + n == P});
    f.run(segs, logits);
  }
  return logits;
}

enum class Decode { normal, low_latency, overlapped };

// Sequences prefilled, then 8 decode steps feeding back each step's argmax;
// every step's logits of this rank's sequences, concatenated. Rank 0 holds
// three (the prompt, its first half and third: with the overlap, two in its
// first micro-batch, one in its second), every other rank one (its second
// micro-batch is empty).
std::vector<float> decode_logits(model::Model& m, comm::Buffer& buf,
                                 const std::vector<std::int32_t>& prompt, bool det, Decode mode,
                                 bool fp8, int rank) {
  serve::KvCache cache(m.config().num_layers, m.config().hidden_size, 4, std::size_t{4} << 20);
  serve::Forward f(m, buf, cache, det, fp8);
  const std::int64_t V = m.config().vocab_size;
  std::vector<std::vector<std::int32_t>> seqs;
  if (rank == 0) {
    seqs = {prompt,
            {prompt.begin(), prompt.begin() + prompt.size() / 2},
            {prompt.begin(), prompt.begin() + prompt.size() / 3}};
  } else {
    seqs = {{prompt.begin() + rank, prompt.end()}};
  }
  std::vector<float> logits, all;
  std::vector<serve::Segment> segs;
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    cache.add(static_cast<std::int64_t>(i), static_cast<std::int64_t>(seqs[i].size()) + 8);
    segs.push_back({static_cast<std::int64_t>(i), 0, seqs[i].data(),
                    static_cast<std::int64_t>(seqs[i].size()), true});
  }
  f.run(segs, logits);
  for (int step = 0; step < 8; ++step) {
    segs.clear();
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      seqs[i].push_back(serve::argmax(logits.data() + i * V, V));
      segs.push_back({static_cast<std::int64_t>(i), static_cast<std::int64_t>(seqs[i].size()) - 1,
                      &seqs[i].back(), 1, true});
    }
    f.run(segs, logits, mode != Decode::normal, mode == Decode::overlapped);
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int failed = 0;
  {
    Group world(MPI_COMM_WORLD);
    const int rank = world.rank();
    const std::string dir = argv[1];
    const bool fp8 = argc > 2 && std::string(argv[2]) == "--fp8";
    std::ifstream in(dir + "/state.json");
    const train::Config cfg =
        train::parse_config(nlohmann::json::parse(in)["config"].get<std::string>());
    model::Model m(cfg.model, rank, world.size());
    model::load_weights(m, dir + "/model.safetensors");
    comm::BufferOptions bo;
    bo.low_latency = true;
    bo.max_tokens_per_rank = 4;
    bo.hidden = cfg.model.hidden_size;
    bo.num_experts = cfg.model.num_experts;
    comm::Buffer buf(world, bo);
    const std::string text = "The 'tabstop' option sets the width of a tab";
    const std::vector<std::int32_t> prompt(text.begin(), text.end());
    const auto P = static_cast<int>(prompt.size());
    const int V = cfg.model.vocab_size;

    const std::vector<float> det = serve_logits(m, buf, prompt, P, true, fp8, rank);
    const std::vector<float> fast = serve_logits(m, buf, prompt, P, false, fp8, rank);
    const std::vector<float> f32 =
        fp8 ? serve_logits(m, buf, prompt, P, true, false, rank) : std::vector<float>();

    // The training forward, V times (every rank runs the same batch of one sequence).
    model::EngineOptions eo;
    eo.fp8_dispatch = fp8;
    model::Engine engine(m, buf, eo);
    std::vector<std::int32_t> targets(prompt.begin() + 1, prompt.end());
    targets.push_back(0);
    std::vector<double> loss(static_cast<std::size_t>(V));
    for (int v = 0; v < V; ++v) {
      targets.back() = v;
      loss[v] = engine.forward_loss({prompt.data(), targets.data(), 1, P});
    }
    if (rank == 0) {
      double worst = 0, worst_fast = 0, range = 0;
      for (int v = 0; v < V; ++v) {
        const double want = loss[0] - loss[v];
        range = std::max(range, std::fabs(want));
        worst = std::max(worst, std::fabs((double(det[v]) - det[0]) - want));
        worst_fast = std::max(worst_fast, std::fabs((double(fast[v]) - fast[0]) - want));
      }
      std::printf(
          "logit differences against the training forward%s: max |error| %.3g (deterministic), "
          "%.3g (batched), of differences up to %.3g\n",
          fp8 ? " (both fp8 dispatch)" : "", worst, worst_fast, range);
      // f32: 2e-5 absolute. fp8: 1e-5 of the range (the training forward
      // quantises the same rows with the same function: no rounding step
      // of e4m3 apart, only f32 sums in another order).
      const double bound = fp8 ? 1e-5 * std::max(range, 1.0) : 2e-5;
      if (worst > bound || worst_fast > bound) {
        std::printf("serve logits: FAILED: differences past %.3g\n", bound);
        failed = 1;
      }
      if (fp8) {
        double away = 0;
        for (int v = 0; v < V; ++v) away = std::max(away, std::fabs(double(det[v]) - f32[v]));
        std::printf("fp8 against f32 dispatch: max |logit diff| %.3g (expected > 1e-4)\n", away);
        if (!(away > 1e-4)) {
          std::printf("serve logits: FAILED: fp8 dispatch gives the f32 logits (not quantised?)\n");
          failed = 1;
        }
      }
    }
    for (const int chunk : {1, 3, 7}) {
      const std::vector<float> d = serve_logits(m, buf, prompt, chunk, true, fp8, rank);
      const std::vector<float> b = serve_logits(m, buf, prompt, chunk, false, fp8, rank);
      if (rank != 0) continue;
      double diff = 0;
      for (int v = 0; v < V; ++v) diff = std::max(diff, std::fabs(double(b[v]) - fast[v]));
      const bool same = d == det;
      std::printf("chunks of %d: deterministic %s, batched max |diff| %.3g\n", chunk,
                  same ? "bit-identical" : "DIFFERS", diff);
      if (!same || diff > 1e-5) failed = 1;
    }
    for (const bool d : {true, false}) {
      const std::vector<float> normal = decode_logits(m, buf, prompt, d, Decode::normal, fp8, rank);
      const std::vector<float> ll =
          decode_logits(m, buf, prompt, d, Decode::low_latency, fp8, rank);
      const std::vector<float> two =
          decode_logits(m, buf, prompt, d, Decode::overlapped, fp8, rank);
      // Every rank compares its own sequences' logits; rank 0 reports for all.
      int bad[2] = {ll != normal || normal.empty(), two != ll};
      MPI_Allreduce(MPI_IN_PLACE, bad, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
      if (rank != 0) continue;
      std::printf(
          "8 decode steps of %d sequences%s%s: low-latency mode %s the normal mode's logits\n",
          world.size() + 2, d ? " (deterministic)" : "", fp8 ? " (fp8 dispatch)" : "",
          bad[0] ? "DIFFERS from" : "bit-identical to");
      std::printf("  two-batch overlap %s the low-latency mode's without it\n",
                  bad[1] ? "DIFFERS from" : "bit-identical to");
      if (bad[0] || bad[1]) failed = 1;
    }
    if (rank == 0) std::printf("serve logits: %s\n", failed ? "FAILED" : "OK");
  }
  MPI_Finalize();
  return failed;
}
