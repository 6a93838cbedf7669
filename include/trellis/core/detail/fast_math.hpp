#pragma once
// The gates' transcendental functions. In single precision they are written out
// (Cody-Waite range reduction and a Cephes-style polynomial, about 2 ulp) so that the
// fused level kernels vectorise on CPUs: the C library's expf and tanhf are scalar
// calls, and they took most of a level's non-GEMM time. Double precision, the
// checking precision, uses the library functions.
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <type_traits>

#include <trellis/detail/kokkos_compat.hpp>

namespace trellis::detail {

// Written so that GCC vectorises loops that call them without -ffast-math: range
// checks compare the bits as integers (a float compare may trap, so GCC will not
// speculate it) and the selects choose between values computed unconditionally.
KOKKOS_INLINE_FUNCTION float bits_to_float(std::int32_t bits) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(bits);
#else
  return __builtin_bit_cast(float, bits);
#endif
}

KOKKOS_INLINE_FUNCTION std::int32_t float_to_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(x);
#else
  return __builtin_bit_cast(std::int32_t, x);
#endif
}

KOKKOS_INLINE_FUNCTION float copysign_float(float magnitude, float sign) {
#if defined(__CUDA_ARCH__)
  return copysignf(magnitude, sign);
#else
  return __builtin_copysignf(magnitude, sign);
#endif
}

/// when ? a : b on float bits, as integer masks. A ternary would let GCC compute only
/// the chosen side, in a branch; under AVX2 (no mask registers) it then cannot
/// vectorise the loop, since the side holds conversions it may not speculate.
KOKKOS_INLINE_FUNCTION float select_bits(bool when, std::int32_t a, std::int32_t b) {
  std::int32_t const m = -std::int32_t(when);
  return bits_to_float((a & m) | (b & ~m));
}

/// e^x for float: relative error about 2 ulp; 0 below about -87.3 (where e^x is
/// subnormal), finite up to 88, NaN for NaN.
KOKKOS_INLINE_FUNCTION float exp_float(float x) {
  std::int32_t const abs_bits = float_to_bits(x) & 0x7fffffff;
  // |x| > 88 (but not NaN): clamp to +-88, by a bit mask rather than a branch (see
  // select_bits).
  x = select_bits((abs_bits > 0x42b00000) & (abs_bits <= 0x7f800000), float_to_bits(copysign_float(88.0f, x)),
                  float_to_bits(x));
  // n = round(x / ln 2); r = x - n ln 2 in two parts so that r is exact.
  float const n = static_cast<float>(static_cast<std::int32_t>(x * 1.44269504088896341f + copysign_float(0.5f, x)));
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float const er = p * r * r + r + 1.0f;
  std::int32_t biased = static_cast<std::int32_t>(n) + 127;
  biased = biased < 0 ? 0 : biased;
  return er * bits_to_float(biased << 23);
}

template <class Scalar>
KOKKOS_INLINE_FUNCTION Scalar gate_sigmoid(Scalar a) {
  if constexpr (std::is_same_v<Scalar, float>) {
    return 1.0f / (1.0f + exp_float(-a));
  } else {
    return Scalar(1) / (Scalar(1) + exp(-a));
  }
}

template <class Scalar>
KOKKOS_INLINE_FUNCTION Scalar gate_tanh(Scalar a) {
  if constexpr (std::is_same_v<Scalar, float>) {
    std::int32_t const magnitude = float_to_bits(a) & 0x7fffffff;
    float const x = bits_to_float(magnitude);
    // Near 0 (|a| < 1/8) the odd Taylor series keeps the relative error small;
    // elsewhere tanh x = (1 - e^{-2x}) / (1 + e^{-2x}). Selecting rather than blending
    // keeps the series, infinite for huge x, from turning the result into a NaN.
    float const x2 = x * x;
    float const series = x * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * (-0.0539682540f + x2 * 0.0218694885f))));
    float const e = exp_float(-2.0f * x);
    float const rational = (1.0f - e) / (1.0f + e);
    float const r = select_bits(magnitude < 0x3e000000, float_to_bits(series), float_to_bits(rational));
    return copysign_float(r, a);
  } else {
    return tanh(a);
  }
}

}  // namespace trellis::detail
