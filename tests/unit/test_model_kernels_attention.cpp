// Causal attention against a plain loop in double, the causal mask, and the
// backward against finite differences on q, k and v.
#include <cmath>

#include <epx/model_kernels.hpp>

#include "tests/unit/model_kernels_testing.hpp"

namespace epx::kernels {
namespace {

using namespace epx::kernels::ktest;

struct Dims {
  std::int64_t batch, seq, heads, d;
  std::int64_t tokens() const { return batch * seq; }
  std::int64_t width() const { return heads * d; }
};

// out [tokens, heads*d]; probs [batch, heads, seq, seq] if given.
template <class T>
std::vector<T> ref_attention(const std::vector<T>& q, const std::vector<T>& k,
                             const std::vector<T>& v, Dims s, std::vector<T>* probs = nullptr) {
  const std::int64_t w = s.width();
  const T scale = T(1) / std::sqrt(T(s.d));
  std::vector<T> out(s.tokens() * w, T(0));
  if (probs) probs->assign(s.batch * s.heads * s.seq * s.seq, T(0));
  std::vector<T> p(s.seq);
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t h = 0; h < s.heads; ++h)
      for (std::int64_t i = 0; i < s.seq; ++i) {
        const T* qi = &q[(b * s.seq + i) * w + h * s.d];
        T m = -INFINITY;
        for (std::int64_t j = 0; j <= i; ++j) {
          const T* kj = &k[(b * s.seq + j) * w + h * s.d];
          T dot = 0;
          for (std::int64_t c = 0; c < s.d; ++c) dot += qi[c] * kj[c];
          p[j] = dot * scale;
          m = std::max(m, p[j]);
        }
        T sum = 0;
        for (std::int64_t j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - m));
        T* oi = &out[(b * s.seq + i) * w + h * s.d];
        for (std::int64_t j = 0; j <= i; ++j) {
          const T pj = p[j] / sum;
          if (probs) (*probs)[((b * s.heads + h) * s.seq + i) * s.seq + j] = pj;
          const T* vj = &v[(b * s.seq + j) * w + h * s.d];
          for (std::int64_t c = 0; c < s.d; ++c) oi[c] += pj * vj[c];
        }
      }
  return out;
}

TEST(ModelKernelsAttention, ForwardMatchesLoops) {
  for (Dims s : {Dims{1, 1, 1, 2}, Dims{2, 5, 3, 4}, Dims{3, 37, 3, 24}, Dims{1, 130, 2, 17}}) {
    SCOPED_TRACE(::testing::Message() << "batch " << s.batch << " seq " << s.seq << " heads "
                                      << s.heads << " head_dim " << s.d);
    const auto q = randn(s.tokens() * s.width(), 1), k = randn(s.tokens() * s.width(), 2),
               v = randn(s.tokens() * s.width(), 3);
    std::vector<float> out(s.tokens() * s.width(), 7.0f),
        probs(s.batch * s.heads * s.seq * s.seq, 7.0f);
    attention_forward(out.data(), probs.data(), q.data(), k.data(), v.data(), s.batch, s.seq,
                      s.heads, s.d);
    std::vector<double> want_p;
    const auto want = ref_attention(to_double(q), to_double(k), to_double(v), s, &want_p);
    expect_close(out, want, kGemmRtol, "out");
    expect_close(probs, want_p, kGemmRtol, "probs");
    for (std::size_t i = 0; i < probs.size(); ++i) {
      if (want_p[i] != 0.0) continue;
      ASSERT_EQ(probs[i], 0.0f) << "probs above the diagonal, " << i;
    }
  }
}

TEST(ModelKernelsAttention, IsCausalAndPerSequence) {
  const Dims s{2, 9, 2, 5};
  const auto q = randn(s.tokens() * s.width(), 4), k = randn(s.tokens() * s.width(), 5),
             v = randn(s.tokens() * s.width(), 6);
  std::vector<float> out(q.size()), probs(s.batch * s.heads * s.seq * s.seq);
  attention_forward(out.data(), probs.data(), q.data(), k.data(), v.data(), s.batch, s.seq,
                    s.heads, s.d);
  // Change token 6 of sequence 0 onward (k, v, q) and every token of sequence 1 past 0:
  // outputs 0..5 of sequence 0 must not move.
  auto q2 = q, k2 = k, v2 = v;
  for (std::int64_t t = 6; t < s.tokens(); ++t)
    for (std::int64_t c = 0; c < s.width(); ++c) {
      q2[t * s.width() + c] += 1.0f;
      k2[t * s.width() + c] -= 2.0f;
      v2[t * s.width() + c] *= 3.0f;
    }
  std::vector<float> out2(q.size());
  attention_forward(out2.data(), probs.data(), q2.data(), k2.data(), v2.data(), s.batch, s.seq,
                    s.heads, s.d);
  const std::int64_t prefix = 6 * s.width();
  expect_bits(std::vector<float>(out2.begin(), out2.begin() + prefix),
              std::vector<float>(out.begin(), out.begin() + prefix), "out before token 6");
  // The first token of each sequence attends to itself only: out = v.
  for (std::int64_t c = 0; c < s.width(); ++c) EXPECT_EQ(out[c], v[c]) << c;
}

TEST(ModelKernelsAttention, BackwardMatchesFiniteDifferences) {
  for (Dims s : {Dims{2, 7, 3, 6}, Dims{1, 3, 1, 2}}) {
    SCOPED_TRACE(::testing::Message() << "batch " << s.batch << " seq " << s.seq);
    const std::size_t size = s.tokens() * s.width();
    const auto q = randn(size, 11), k = randn(size, 12), v = randn(size, 13), r = randn(size, 14);
    std::vector<float> out(size), probs(s.batch * s.heads * s.seq * s.seq);
    attention_forward(out.data(), probs.data(), q.data(), k.data(), v.data(), s.batch, s.seq,
                      s.heads, s.d);
    std::vector<float> dq(size, 7.0f), dk(size, 7.0f), dv(size, 7.0f),
        scratch(attention_backward_scratch(s.seq), 7.0f);
    attention_backward(dq.data(), dk.data(), dv.data(), r.data(), q.data(), k.data(), v.data(),
                       probs.data(), s.batch, s.seq, s.heads, s.d, scratch.data());
    const auto qd = to_double(q), kd = to_double(k), vd = to_double(v);
    expect_close(dq, fd_grad([&](const auto& x) {
      return weighted_sum(ref_attention(x, kd, vd, s), r);
    }, qd), kGradRtol, "dq");
    expect_close(dk, fd_grad([&](const auto& x) {
      return weighted_sum(ref_attention(qd, x, vd, s), r);
    }, kd), kGradRtol, "dk");
    expect_close(dv, fd_grad([&](const auto& x) {
      return weighted_sum(ref_attention(qd, kd, x, s), r);
    }, vd), kGradRtol, "dv");
  }
}

TEST(ModelKernelsAttention, EmptyBatch) {
  attention_forward(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 5, 2, 4);
  attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 5,
                     2, 4, nullptr);
  EXPECT_EQ(attention_backward_scratch(0), 0);
  EXPECT_GE(attention_backward_scratch(7), 49);
}

}  // namespace
}  // namespace epx::kernels
