// Plain reference models of the small float formats for the kernel tests.
// Written independently of kernels/float_convert.hpp: decoding by the formula
// sign * 2^(e - bias) * (1 + m / 2^mant) in double, encoding by searching the
// finite codes for the nearest value (ties to the code with an even lowest bit).
// Slow and obvious on purpose.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace epx::test {

struct RefFormat {
  int exp_bits;
  int mant_bits;
  int bias;
  bool ieee_specials;      // all-ones exponent = inf/NaN; else only the all-ones code is NaN
  std::uint32_t nan_code;  // what the encoder must produce for a positive NaN
  const char* name;
};

inline constexpr RefFormat kRefE4m3{4, 3, 7, false, 0x7F, "e4m3"};
inline constexpr RefFormat kRefE5m2{5, 2, 15, true, 0x7E, "e5m2"};
inline constexpr RefFormat kRefF16{5, 10, 15, true, 0x7E00, "f16"};

inline std::uint32_t ref_sign_bit(const RefFormat& f) { return 1u << (f.exp_bits + f.mant_bits); }

inline bool ref_is_nan(const RefFormat& f, std::uint32_t code) {
  const std::uint32_t e = (code >> f.mant_bits) & ((1u << f.exp_bits) - 1);
  const std::uint32_t m = code & ((1u << f.mant_bits) - 1);
  const std::uint32_t all_e = (1u << f.exp_bits) - 1;
  if (f.ieee_specials) return e == all_e && m != 0;
  return e == all_e && m == (1u << f.mant_bits) - 1;
}

inline bool ref_is_inf(const RefFormat& f, std::uint32_t code) {
  const std::uint32_t e = (code >> f.mant_bits) & ((1u << f.exp_bits) - 1);
  const std::uint32_t m = code & ((1u << f.mant_bits) - 1);
  return f.ieee_specials && e == (1u << f.exp_bits) - 1 && m == 0;
}

// Value of a code; NaN codes give a NaN with the code's sign.
inline double ref_decode(const RefFormat& f, std::uint32_t code) {
  const bool negative = (code & ref_sign_bit(f)) != 0;
  const int e = static_cast<int>((code >> f.mant_bits) & ((1u << f.exp_bits) - 1));
  const int m = static_cast<int>(code & ((1u << f.mant_bits) - 1));
  double v;
  if (ref_is_nan(f, code)) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (ref_is_inf(f, code)) {
    v = std::numeric_limits<double>::infinity();
  } else if (e == 0) {
    v = std::ldexp(static_cast<double>(m), 1 - f.bias - f.mant_bits);
  } else {
    v = std::ldexp(1.0 + std::ldexp(static_cast<double>(m), -f.mant_bits), e - f.bias);
  }
  return negative ? -std::fabs(v) : std::fabs(v);
}

// The largest finite positive code.
inline std::uint32_t ref_max_code(const RefFormat& f) {
  std::uint32_t c = ref_sign_bit(f) - 1;
  while (ref_is_nan(f, c) || ref_is_inf(f, c)) --c;
  return c;
}

// Encoding by nearest search over every finite positive code (ties: even lowest
// bit), plus saturation: anything at or beyond the largest finite value, and
// infinity, gives the largest finite code (written out rather than left to the
// search, whose double distances stop being exact for huge values). NaN gives
// nan_code with x's sign.
inline std::uint32_t ref_encode_exhaustive(const RefFormat& f, float x) {
  const std::uint32_t sign = std::signbit(x) ? ref_sign_bit(f) : 0u;
  if (std::isnan(x)) return f.nan_code | sign;
  const std::uint32_t max_code = ref_max_code(f);
  const double a = std::fabs(static_cast<double>(x));
  if (a >= ref_decode(f, max_code)) return max_code | sign;
  std::uint32_t best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (std::uint32_t c = 0; c <= max_code; ++c) {
    const double d = std::fabs(a - ref_decode(f, c));  // exact: both values have short mantissas
    if (d < best_d || (d == best_d && (c & 1u) == 0)) {
      best = c;
      best_d = d;
    }
  }
  return best | sign;
}

// The same nearest search over the sorted positive finite values, by bisection,
// for f16 (too many codes to scan per sample): only the two neighbours of x can win.
class RefSortedEncoder {
 public:
  explicit RefSortedEncoder(const RefFormat& f) : f_(f) {
    for (std::uint32_t c = 0; c <= ref_max_code(f); ++c) values_.push_back(ref_decode(f, c));
  }

  std::uint32_t encode(float x) const {
    const std::uint32_t sign = std::signbit(x) ? ref_sign_bit(f_) : 0u;
    if (std::isnan(x)) return f_.nan_code | sign;
    const double a = std::fabs(static_cast<double>(x));
    const auto last = static_cast<std::uint32_t>(values_.size() - 1);
    if (a >= values_[last]) return last | sign;
    return nearest(a) | sign;
  }

 private:
  std::uint32_t nearest(double a) const {
    std::uint32_t lo = 0, hi = static_cast<std::uint32_t>(values_.size() - 1);
    while (hi - lo > 1) {  // invariant: values_[lo] <= a < values_[hi]
      const std::uint32_t mid = (lo + hi) / 2;
      if (values_[mid] <= a)
        lo = mid;
      else
        hi = mid;
    }
    const double dl = a - values_[lo], dh = values_[hi] - a;
    if (dl < dh) return lo;
    if (dh < dl) return hi;
    return (lo & 1u) == 0 ? lo : hi;
  }

  RefFormat f_;
  std::vector<double> values_;
};

inline std::uint32_t f32_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float f32_from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// bf16 by comparing the distances to the two bf16 neighbours of x in double
// (the upper one may be 2^128, which rounds to infinity as IEEE says). NaN: not
// handled here (tests check NaN separately).
inline std::uint16_t ref_bf16(float x) {
  const std::uint32_t u = f32_bits(x);
  const std::uint32_t lo = u & 0xFFFF0000u;  // toward zero
  const std::uint32_t hi = lo + 0x10000u;    // away from zero
  const double a = std::fabs(static_cast<double>(x));
  const double vlo = std::fabs(static_cast<double>(f32_from_bits(lo)));
  const double vhi = ((hi >> 23) & 0xFF) == 0xFF
                         ? std::ldexp(1.0, 128)
                         : std::fabs(static_cast<double>(f32_from_bits(hi)));
  const double dl = a - vlo, dh = vhi - a;
  std::uint32_t pick;
  if (dl < dh)
    pick = lo;
  else if (dh < dl)
    pick = hi;
  else
    pick = ((lo >> 16) & 1u) == 0 ? lo : hi;
  return static_cast<std::uint16_t>(pick >> 16);
}

}  // namespace epx::test
