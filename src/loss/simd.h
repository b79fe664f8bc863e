// Portable SIMD for the fused loss kernel, on GCC/Clang vector extensions: vectors of B bytes per
// scalar type, B chosen per instruction set (see kernel widths in fused.cc): one vector should be
// one register, since a 64-byte vector on AVX2 is two ymm registers and the kernel's live state
// then no longer fits (measured: the AVX2 build spilled to the stack and ran 10x slower than the
// AVX-512 one). Everything here must inline into the per-ISA kernels, so the helpers are
// always_inline and never take vectors across a real call.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#define TDPO_INLINE inline __attribute__((always_inline))

// x86-64 with GCC: the kernels are built once per instruction set (x86-64-v4 / AVX-512 with 64-byte
// vectors, v3 / AVX2 with 32, baseline SSE2 with 16) and picked at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(TDPO_NO_CLONES)
#define TDPO_PER_ISA 1
#else
#define TDPO_PER_ISA 0
#endif

namespace tdpo::simd {

template <typename T, int B>
struct VecOf {
  typedef T vec __attribute__((vector_size(B)));
};
template <typename T, int B>
using Vec = typename VecOf<T, B>::vec;
template <typename T, int B>
constexpr int kLanes = B / int(sizeof(T));

/** The scalar type of a vector type. */
template <typename V>
using Elem = std::remove_cv_t<std::remove_reference_t<decltype(V{}[0])>>;

template <typename V>
TDPO_INLINE V splat(Elem<V> x) {
  return V{} + x;
}
template <typename V>
TDPO_INLINE V load(const Elem<V>* p) {
  V v;
  std::memcpy(&v, p, sizeof v);  // unaligned load; typed arrays are only 4-byte aligned
  return v;
}
template <typename V>
TDPO_INLINE void store(Elem<V>* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
template <typename V>
TDPO_INLINE V vmax(V a, V b) {
  return a > b ? a : b;
}

// exp for float lanes: Cephes-style range reduction (x = n ln2 + r) and a degree-6 polynomial,
// within ~2 ulp on [-87.3, 88.7]; below that the result is 0, so exp(-inf) = 0 exactly, which the
// kernel relies on for banned (-inf) tokens. Inputs are never NaN or +inf here (rejected earlier).
template <typename V>
TDPO_INLINE V vexp(V x) {
  if constexpr (std::is_same_v<Elem<V>, float>) {
    using M = decltype(x < x);
    const V hi = splat<V>(88.3762626647949f), lo = splat<V>(-87.3365447504f);
    const M underflow = x < lo;
    V xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    // Round to nearest integer with the 1.5 * 2^23 trick (exact for |v| < 2^22).
    const V magic = splat<V>(12582912.0f);
    V n = (xc * splat<V>(1.44269504088896341f) + magic) - magic;
    V r = xc - n * splat<V>(0.693359375f) - n * splat<V>(-2.12194440e-4f);
    V r2 = r * r;
    V p = splat<V>(1.9875691500E-4f);
    p = p * r + splat<V>(1.3981999507E-3f);
    p = p * r + splat<V>(8.3334519073E-3f);
    p = p * r + splat<V>(4.1665795894E-2f);
    p = p * r + splat<V>(1.6666665459E-1f);
    p = p * r + splat<V>(5.0000001201E-1f);
    p = p * r2 + r + splat<V>(1.0f);
    M e = (__builtin_convertvector(n, M) + 127) << 23;
    V scale;
    std::memcpy(&scale, &e, sizeof scale);
    V out = p * scale;
    return underflow ? splat<V>(0.0f) : out;
  } else {
    // Double lanes serve the test-only float64 instantiation: exactness over speed.
    V out;
    for (int i = 0; i < int(sizeof(V) / sizeof(double)); ++i) out[i] = std::exp(x[i]);
    return out;
  }
}

}  // namespace tdpo::simd
