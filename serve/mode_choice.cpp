#include "serve/mode_choice.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>

#include <epx/kernels.hpp>

namespace epx::serve {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class F>
double time_s(F f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

bool DecodeModeChoice::low_latency(int batch) const {
  for (std::size_t i = 0; i < batches.size(); ++i)
    if (batches[i] >= batch) return low_latency_s[i] < normal_s[i];
  return !batches.empty() && low_latency_s.back() < normal_s.back();
}

std::string DecodeModeChoice::describe() const {
  std::string s =
      std::string("decode mode by batch (start-up measurement of dispatch + combine, ") +
      (fp8 ? "fp8" : "f32") + " dispatch, normal / low-latency ms):";
  for (std::size_t i = 0; i < batches.size(); ++i) {
    char b[96];
    std::snprintf(b, sizeof b, " %d: %.3f / %.3f %s%s", batches[i], 1e3 * normal_s[i],
                  1e3 * low_latency_s[i], low_latency_s[i] < normal_s[i] ? "low-latency" : "normal",
                  i + 1 < batches.size() ? "," : "");
    s += b;
  }
  return s;
}

DecodeModeChoice choose_decode_modes(comm::Buffer& buffer, Control& control,
                                     const model::ModelConfig& c, int max_batch, bool fp8,
                                     int iters) {
  const int R = control.size(), E = c.num_experts, K = c.top_k, El = E / R;
  const std::int64_t H = c.hidden_size;
  DecodeModeChoice out;
  out.fp8 = fp8;
  for (int b = 1;; b *= 2) {
    out.batches.push_back(std::min(b, max_batch));
    if (b >= max_batch) break;
  }
  std::mt19937 rng(static_cast<unsigned>(1234 + control.rank()));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<double> mine;  // per batch: normal, then low-latency
  for (const int batch : out.batches) {
    const std::int64_t T = (batch + R - 1) / R;
    Tensor x = Tensor::empty({T, H}, DType::f32);
    Tensor idx = Tensor::empty({T, K}, DType::i64);
    Tensor w = Tensor::empty({T, K}, DType::f32);
    std::vector<std::int64_t> experts(static_cast<std::size_t>(E));
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t j = 0; j < H; ++j) x.data<float>()[t * H + j] = u(rng);
      std::iota(experts.begin(), experts.end(), 0);
      std::shuffle(experts.begin(), experts.end(), rng);
      for (int k = 0; k < K; ++k) {
        idx.data<std::int64_t>()[t * K + k] = experts[static_cast<std::size_t>(k)];
        w.data<float>()[t * K + k] = u(rng);
      }
    }
    // With fp8 each path also dequantises its received rows, as serve::Forward does.
    const auto normal = [&] {
      const comm::Layout layout = buffer.get_dispatch_layout(idx, E);
      comm::DispatchOptions dopt;
      dopt.fp8 = fp8;
      comm::DispatchResult got = buffer.dispatch(x, idx, w, layout, dopt);
      const std::int64_t M = got.x.dim(0);
      if (fp8 && M > 0) kernels::per_token_cast_back(got.x, got.x_scales, DType::f32);
      Tensor y = buffer.combine_input(got.handle, K * H, DType::f32);
      if (M > 0) std::memset(y.data<float>(), 0, sizeof(float) * M * K * H);
      const comm::Handle handle = got.handle;
      got = comm::DispatchResult();
      buffer.combine(y, handle);
    };
    const auto low_latency = [&] {
      comm::LowLatencyOptions lo;
      lo.fp8 = fp8;
      comm::LowLatencyDispatchResult got = buffer.low_latency_dispatch(x, idx, lo);
      const std::int64_t slots = got.x.dim(1), S = H / 128;
      Tensor y = Tensor::empty({El, slots, H}, DType::f32);
      if (!fp8) {
        std::memcpy(y.data<float>(), got.x.data<float>(), sizeof(float) * El * slots * H);
      } else {
        const std::int32_t* count = got.count.data<std::int32_t>();
        for (int e = 0; e < El; ++e) {
          if (count[e] == 0) continue;
          const Tensor q =
              Tensor::wrap(got.x.data<std::uint8_t>() + e * slots * H, {count[e], H}, DType::e4m3);
          const Tensor sc =
              Tensor::wrap(got.x_scales.data<float>() + e * slots * S, {count[e], S}, DType::f32);
          const Tensor back = kernels::per_token_cast_back(q, sc, DType::f32);
          std::memcpy(y.data<float>() + e * slots * H, back.data<float>(),
                      sizeof(float) * count[e] * H);
        }
      }
      const comm::LowLatencyHandle handle = got.handle;
      got = comm::LowLatencyDispatchResult();
      lo.fp8 = false;  // the combine stays f32
      buffer.low_latency_combine(y, idx, w, handle, lo);
    };
    normal();
    low_latency();
    std::vector<double> tn, tl;
    for (int i = 0; i < iters; ++i) {  // interleaved, so that both see the same machine
      tn.push_back(time_s(normal));
      tl.push_back(time_s(low_latency));
    }
    mine.push_back(median(tn));
    mine.push_back(median(tl));
  }
  // Rank 0 takes the slowest rank's time per entry and tells every rank.
  const std::vector<float> own(mine.begin(), mine.end());
  const std::vector<int> counts(static_cast<std::size_t>(R), static_cast<int>(own.size()));
  const std::vector<float> all = control.gather(own, counts, "the decode mode measurement");
  std::vector<std::int64_t> message;
  if (control.rank() == 0) {
    for (std::size_t i = 0; i < own.size(); ++i) {
      float worst = 0;
      for (int r = 0; r < R; ++r) worst = std::max(worst, all[r * own.size() + i]);
      message.push_back(static_cast<std::int64_t>(static_cast<double>(worst) * 1e9));  // ns
    }
  }
  control.broadcast(message, "the decode mode measurement", false);
  for (std::size_t i = 0; i < out.batches.size(); ++i) {
    out.normal_s.push_back(static_cast<double>(message[2 * i]) * 1e-9);
    out.low_latency_s.push_back(static_cast<double>(message[2 * i + 1]) * 1e-9);
  }
  return out;
}

}  // namespace epx::serve
