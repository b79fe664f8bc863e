// Portable SIMD for the fused loss kernel, on GCC/Clang vector extensions: one 64-byte vector type
// per scalar type, which the compiler lowers to AVX-512, AVX2 or SSE depending on the clone it is
// building (see TDPO_KERNEL_CLONES). Everything here must inline into the cloned kernels, so the
// helpers are always_inline and never take vectors across a real call.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#define TDPO_INLINE inline __attribute__((always_inline))

// x86-64: build the hot loops three times and pick at load time (ifunc), so one prebuilt binary is
// fast on AVX-512 and AVX2 machines and still runs on a baseline x86-64 CPU.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(TDPO_NO_CLONES)
#define TDPO_KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TDPO_KERNEL_CLONES
#endif

namespace tdpo::simd {

template <typename T>
struct VecTraits;
template <>
struct VecTraits<float> {
  typedef float vec __attribute__((vector_size(64)));
  typedef int32_t mask __attribute__((vector_size(64)));
};
template <>
struct VecTraits<double> {
  typedef double vec __attribute__((vector_size(64)));
  typedef int64_t mask __attribute__((vector_size(64)));
};

template <typename T>
using Vec = typename VecTraits<T>::vec;
template <typename T>
using Mask = typename VecTraits<T>::mask;
template <typename T>
constexpr int kLanes = 64 / sizeof(T);

template <typename T>
TDPO_INLINE Vec<T> splat(T x) {
  return Vec<T>{} + x;
}
template <typename T>
TDPO_INLINE Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);  // unaligned load; typed arrays are only 4-byte aligned
  return v;
}
template <typename T>
TDPO_INLINE void store(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof v);
}
template <typename V>
TDPO_INLINE V vmax(V a, V b) {
  return a > b ? a : b;
}

// exp for float lanes: Cephes-style range reduction (x = n ln2 + r) and a degree-6 polynomial,
// within ~2 ulp on [-87.3, 88.7]; below that the result is 0, so exp(-inf) = 0 exactly, which the
// kernel relies on for banned (-inf) tokens. Inputs are never NaN or +inf here (rejected earlier).
TDPO_INLINE Vec<float> vexp(Vec<float> x) {
  using V = Vec<float>;
  using M = Mask<float>;
  const V hi = splat(88.3762626647949f), lo = splat(-87.3365447504f);
  const M underflow = x < lo;
  V xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  // Round to nearest integer with the 1.5 * 2^23 trick (exact for |v| < 2^22).
  const V magic = splat(12582912.0f);
  V n = (xc * splat(1.44269504088896341f) + magic) - magic;
  V r = xc - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
  V r2 = r * r;
  V p = splat(1.9875691500E-4f);
  p = p * r + splat(1.3981999507E-3f);
  p = p * r + splat(8.3334519073E-3f);
  p = p * r + splat(4.1665795894E-2f);
  p = p * r + splat(1.6666665459E-1f);
  p = p * r + splat(5.0000001201E-1f);
  p = p * r2 + r + splat(1.0f);
  M e = (__builtin_convertvector(n, M) + 127) << 23;
  V scale;
  std::memcpy(&scale, &e, sizeof scale);
  V out = p * scale;
  return underflow ? splat(0.0f) : out;
}

// Double lanes serve the test-only float64 instantiation: exactness over speed.
TDPO_INLINE Vec<double> vexp(Vec<double> x) {
  Vec<double> out;
  for (int i = 0; i < kLanes<double>; ++i) out[i] = std::exp(x[i]);
  return out;
}

}  // namespace tdpo::simd
