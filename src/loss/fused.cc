// The fused TDPO kernel. Per scored row (b, t) with policy logits z, reference logits r, label y:
//
//   forward   one pass over the vocabulary with an online (block-wise) max for both models:
//               lse_z = log sum exp z,   lse_r = log sum exp r,
//               KL(q || p) = sum_v q_v ((r_v - m_r) - (z_v - m_z)) + log s_z - log s_r,
//               H(p) = log s_z - sum_v p_v (z_v - m_z)   (the policy's entropy, for monitoring),
//             q = softmax(r), p = softmax(z), m the maxima, s the sums of e^(x - m). The middle
//             sum is kept unnormalised, sum e^(r_v - m_r) ((r_v - m_r) - (z_v - m_z)), and moved
//             to each new running max. Every difference is taken against its own model's max, so
//             a common offset of either model's logits cancels exactly: r_v - z_v, the textbook
//             form, loses all precision when the two models' logits sit far apart (an offset of
//             1e9 gave KL 78 for 2.4). A term with q_v = 0 counts as 0 (banned tokens).
//   backward  recomputes p and q from the saved lse values (no [B, T, V] intermediates):
//               dL/dz_v = c (1[v = y] - p_v) + a (p_v - q_v)
//             with c = dL/d log p(y) and a = dL/d KL at that row, from the pair objective.
//
// Rows run in parallel (at::parallel_for, so the intra-op thread count applies); within a row the
// vocabulary is processed in vectors of one register (simd.h). Rows that are not scored are only checked for
// NaN / +inf (the contract rejects those anywhere) and get a zero gradient.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "common/error.h"
#include "loss/row_kernel.h"
#include "loss/simd.h"
#include "loss/tdpo_loss.h"

namespace tdpo::loss {
namespace {

using detail::RowStats;

// Vectors per block: the running max is updated (and the sums rescaled) once per block, so the
// rescaling exp is amortised over kBlock vectors while the block stays in L1.
constexpr int kBlock = 8;

// The kernels for scalar type T in vectors of B bytes (simd.h). Every member is always_inline, so
// each per-ISA entry point below compiles its own copy with that ISA's instructions.
template <typename T, int B>
struct Kernel {
  using V = simd::Vec<T, B>;
  static constexpr int L = simd::kLanes<T, B>;

  struct Online {
    // Per lane: running maxima, sums of exp, sum e^(r - m_r) ((r - m_r) - (z - m_z)) and
    // sum e^(z - m_z) (z - m_z), where an -inf max stands as 0 (drop_neg_inf) so that every
    // difference stays defined.
    V mz, mr, sz, sr, acc, hz;
    V bad;  // > 0 in lanes that saw NaN or +inf
  };

  static TDPO_INLINE V splat(T x) { return simd::splat<V>(x); }

  static TDPO_INLINE V drop_neg_inf(V m) {
    // exp(x - m) with m = -inf would be exp(NaN) for x = -inf; use 0 instead (all sums are 0 then).
    return m == splat(-std::numeric_limits<T>::infinity()) ? splat(0) : m;
  }

  // H: also accumulate the entropy's sum (hz). A template flag, so that the plain loss pays nothing
  // for it: the extra multiply-select per entry costs the forward 2-3% (scripts/bench-entropy.mjs).
  template <bool H>
  static TDPO_INLINE void absorb_block(Online& s, const T* z, const T* r) {
    const V inf = splat(std::numeric_limits<T>::infinity());
    V bz = simd::load<V>(z), br = simd::load<V>(r);
    for (int k = 1; k < kBlock; ++k) {
      bz = simd::vmax(bz, simd::load<V>(z + k * L));
      br = simd::vmax(br, simd::load<V>(r + k * L));
    }
    const V nz = simd::vmax(s.mz, bz), nr = simd::vmax(s.mr, br);
    const V nz0 = drop_neg_inf(nz), nr0 = drop_neg_inf(nr);
    // Rescale what was accumulated under the old max. old = -inf gives factor 0 on sums that are 0.
    const V fz = simd::vexp(s.mz - nz0), fr = simd::vexp(s.mr - nr0);
    // Each accumulated difference moves by (nz0 - mz0) - (nr0 - mr0) with the new maxima.
    const V shift = (nz0 - drop_neg_inf(s.mz)) - (nr0 - drop_neg_inf(s.mr));
    // A factor that underflows to 0 drops terms whose q is now 0, infinite ones (p = 0) included.
    s.acc = fr != splat(0) ? fr * (s.acc + s.sr * shift) : splat(0);
    // Each (z - m_z) moves by mz0 - nz0 likewise; a factor of 0 leaves sums that are 0 (or negligible).
    if constexpr (H) s.hz = fz != splat(0) ? fz * (s.hz + s.sz * (drop_neg_inf(s.mz) - nz0)) : splat(0);
    s.sz *= fz;
    s.sr *= fr;
    s.mz = nz;
    s.mr = nr;
    for (int k = 0; k < kBlock; ++k) {
      const V zk = simd::load<V>(z + k * L), rk = simd::load<V>(r + k * L);
      // !(x < inf) is NaN or +inf in one compare; a float count keeps GCC on vector code (integer
      // mask vectors made it fall back to one scalar compare per lane).
      s.bad += zk < inf ? splat(0) : splat(1);
      s.bad += rk < inf ? splat(0) : splat(1);
      const V dz = zk - nz0, dr = rk - nr0;
      const V ez = simd::vexp(dz), er = simd::vexp(dr);
      s.sz += ez;
      s.sr += er;
      s.acc += er != splat(0) ? er * (dr - dz) : splat(0);
      if constexpr (H) s.hz += ez != splat(0) ? ez * dz : splat(0);  // p = 0 (a -inf logit) adds nothing
    }
  }

  template <bool H>
  static TDPO_INLINE RowStats row_forward(const T* z, const T* r, int64_t n, int32_t y) {
    constexpr int W = kBlock * L;
    const T ninf = -std::numeric_limits<T>::infinity();
    Online s;
    s.mz = s.mr = splat(ninf);
    s.sz = s.sr = s.acc = s.hz = splat(0);
    s.bad = splat(0);
    int64_t i = 0;
    for (; i + W <= n; i += W) absorb_block<H>(s, z + i, r + i);
    if (i < n) {
      // The tail, padded with -inf: contributes exactly nothing to any sum.
      alignas(64) T tz[W], tr[W];
      std::fill(tz, tz + W, ninf);
      std::fill(tr, tr + W, ninf);
      std::copy(z + i, z + n, tz);
      std::copy(r + i, r + n, tr);
      absorb_block<H>(s, tz, tr);
    }
    RowStats out{};
    out.bad = false;
    double mz = -INFINITY, mr = -INFINITY;
    for (int l = 0; l < L; ++l) {
      out.bad |= s.bad[l] != 0;  // counts of NaN / +inf (never NaN themselves)
      mz = std::max(mz, double(s.mz[l]));
      mr = std::max(mr, double(s.mr[l]));
    }
    out.max_z = mz;
    out.max_r = mr;
    if (out.bad || mz == -INFINITY || mr == -INFINITY) return out;
    double sz = 0, sr = 0, acc = 0, hz = 0;
    for (int l = 0; l < L; ++l) {
      if (s.mz[l] != ninf) {
        const double f = std::exp(double(s.mz[l]) - mz);
        sz += double(s.sz[l]) * f;
        // f = 0: a lane far below the max (its difference may even overflow in double precision).
        if (H && f != 0) hz += f * (double(s.hz[l]) + double(s.sz[l]) * (double(s.mz[l]) - mz));
      }
      if (s.mr[l] != ninf) {
        const double f = std::exp(double(s.mr[l]) - mr);
        if (f == 0) continue;
        // The lane's differences were taken against its own maxima (-inf standing as 0).
        const double mzl = s.mz[l] == ninf ? 0.0 : double(s.mz[l]);
        sr += double(s.sr[l]) * f;
        acc += f * (double(s.acc[l]) + double(s.sr[l]) * ((mz - mzl) - (mr - double(s.mr[l]))));
      }
    }
    out.logsum_z = std::log(sz);
    out.logsum_r = std::log(sr);
    out.logp = (double(z[y]) - mz) - out.logsum_z;
    out.logq = (double(r[y]) - mr) - out.logsum_r;
    out.kl = acc / sr + (out.logsum_z - out.logsum_r);
    // Never negative: the max's lane gives sz >= 1 and every term of hz is <= 0. NaN without H
    // (never read then).
    out.entropy = H ? out.logsum_z - hz / sz : NAN;
    // Not reached with finite inputs; kept so that no NaN KL can leave this function.
    if (std::isnan(out.kl)) out.kl = INFINITY;
    return out;
  }

  static TDPO_INLINE void row_backward(const T* z, const T* r, int64_t n, int32_t y, T mz, T lsz,
                                       T mr, T lsr, T c, T a, T* g) {
    const V vmz = splat(mz), vlz = splat(lsz);
    const V vmr = splat(mr), vlr = splat(lsr);
    const V vac = splat(a - c), va = splat(a);
    int64_t i = 0;
    if (a == 0) {  // DPO, and TDPO2's chosen rows: the KL term has no gradient, skip reading r.
      for (; i + L <= n; i += L) simd::store(g + i, vac * simd::vexp((simd::load<V>(z + i) - vmz) - vlz));
    } else {
      for (; i + L <= n; i += L) {
        const V p = simd::vexp((simd::load<V>(z + i) - vmz) - vlz);
        const V q = simd::vexp((simd::load<V>(r + i) - vmr) - vlr);
        simd::store(g + i, vac * p - va * q);
      }
    }
    if (i < n) {
      alignas(64) T tz[L], tr[L], tg[L];
      std::fill(tz, tz + L, -std::numeric_limits<T>::infinity());
      std::fill(tr, tr + L, -std::numeric_limits<T>::infinity());
      std::copy(z + i, z + n, tz);
      if (a != 0) std::copy(r + i, r + n, tr);  // else q is not needed (and r may be null)
      const V p = simd::vexp((simd::load<V>(tz) - vmz) - vlz);
      const V q = simd::vexp((simd::load<V>(tr) - vmr) - vlr);
      simd::store(tg, vac * p - va * q);
      std::copy(tg, tg + (n - i), g + i);
    }
    g[y] += c;
  }

  static TDPO_INLINE RowCheck check_row(const T* x, int64_t n) {
    const T inf = std::numeric_limits<T>::infinity();
    V bad = splat(0), mx = splat(-inf);
    int64_t i = 0;
    for (; i + L <= n; i += L) {
      const V v = simd::load<V>(x + i);
      bad += v < splat(inf) ? splat(0) : splat(1);
      mx = simd::vmax(mx, v);
    }
    RowCheck out{false, true};
    for (int l = 0; l < L; ++l) {
      out.invalid |= bad[l] != 0;
      out.all_neg_inf &= mx[l] == -inf;
    }
    for (; i < n; ++i) {
      out.invalid |= !(x[i] < inf);
      out.all_neg_inf &= x[i] == -inf;
    }
    return out;
  }
};

// The float kernels, one entry point per instruction set with that set's register width, picked
// once at load (a function pointer per kernel); double (tests only) runs one portable build.
struct FloatKernels {
  RowStats (*forward)(const float*, const float*, int64_t, int32_t);
  RowStats (*forward_entropy)(const float*, const float*, int64_t, int32_t);
  void (*backward)(const float*, const float*, int64_t, int32_t, float, float, float, float, float,
                   float, float*);
  RowCheck (*check)(const float*, int64_t);
  const char* isa;
};

#define TDPO_FLOAT_KERNELS(NAME, TARGET, BYTES)                                                   \
  TARGET RowStats forward_##NAME(const float* z, const float* r, int64_t n, int32_t y) {         \
    return Kernel<float, BYTES>::row_forward<false>(z, r, n, y);                                  \
  }                                                                                              \
  TARGET RowStats forward_entropy_##NAME(const float* z, const float* r, int64_t n, int32_t y) { \
    return Kernel<float, BYTES>::row_forward<true>(z, r, n, y);                                   \
  }                                                                                              \
  TARGET void backward_##NAME(const float* z, const float* r, int64_t n, int32_t y, float mz,    \
                              float lsz, float mr, float lsr, float c, float a, float* g) {      \
    Kernel<float, BYTES>::row_backward(z, r, n, y, mz, lsz, mr, lsr, c, a, g);                    \
  }                                                                                              \
  TARGET RowCheck check_##NAME(const float* x, int64_t n) {                                      \
    return Kernel<float, BYTES>::check_row(x, n);                                                 \
  }

#if TDPO_PER_ISA
TDPO_FLOAT_KERNELS(avx512, __attribute__((target("arch=x86-64-v4"))), 64)
TDPO_FLOAT_KERNELS(avx2, __attribute__((target("arch=x86-64-v3"))), 32)
TDPO_FLOAT_KERNELS(sse2, , 16)

// TDPO_KERNEL_ISA=avx2 or sse2 asks for a narrower kernel than the CPU allows (tests run every
// kernel this way); a wider one than the CPU has, or another name, is ignored.
FloatKernels pick_float_kernels() {
  __builtin_cpu_init();
  const char* env = std::getenv("TDPO_KERNEL_ISA");
  std::string want = env ? env : "";
  if (want != "avx512" && want != "avx2" && want != "sse2") want.clear();
  const bool v4 = __builtin_cpu_supports("x86-64-v4") && (want.empty() || want == "avx512");
  const bool v3 = __builtin_cpu_supports("x86-64-v3") && want != "sse2";
  if (v4) return {forward_avx512, forward_entropy_avx512, backward_avx512, check_avx512, "avx512"};
  if (v3) return {forward_avx2, forward_entropy_avx2, backward_avx2, check_avx2, "avx2"};
  return {forward_sse2, forward_entropy_sse2, backward_sse2, check_sse2, "sse2"};
}
#else
// Elsewhere one build, with the width of the widest vector registers the compiler targets.
#if defined(__AVX512F__)
TDPO_FLOAT_KERNELS(generic, , 64)
#elif defined(__AVX__)
TDPO_FLOAT_KERNELS(generic, , 32)
#else
TDPO_FLOAT_KERNELS(generic, , 16)
#endif
FloatKernels pick_float_kernels() {
  return {forward_generic, forward_entropy_generic, backward_generic, check_generic, "generic"};
}
#endif
#undef TDPO_FLOAT_KERNELS

const FloatKernels& float_kernels() {
  static const FloatKernels k = pick_float_kernels();
  return k;
}

}  // namespace

namespace detail {
RowStats row_forward(const float* z, const float* r, int64_t n, int32_t y, bool entropy) {
  return entropy ? float_kernels().forward_entropy(z, r, n, y) : float_kernels().forward(z, r, n, y);
}
RowStats row_forward(const double* z, const double* r, int64_t n, int32_t y, bool entropy) {
  return entropy ? Kernel<double, 64>::row_forward<true>(z, r, n, y) : Kernel<double, 64>::row_forward<false>(z, r, n, y);
}
void row_backward(const float* z, const float* r, int64_t n, int32_t y, float mz, float lsz,
                  float mr, float lsr, float c, float a, float* g) {
  float_kernels().backward(z, r, n, y, mz, lsz, mr, lsr, c, a, g);
}
void row_backward(const double* z, const double* r, int64_t n, int32_t y, double mz, double lsz,
                  double mr, double lsr, double c, double a, double* g) {
  Kernel<double, 64>::row_backward(z, r, n, y, mz, lsz, mr, lsr, c, a, g);
}

}  // namespace detail

using detail::row_backward;
using detail::row_forward;

RowCheck check_row(const float* data, int64_t n) { return float_kernels().check(data, n); }
RowCheck check_row(const double* data, int64_t n) { return Kernel<double, 64>::check_row(data, n); }

const char* kernel_isa() { return float_kernels().isa; }

template <typename T>
Result fused(const Inputs<T>& in, const Options& opt) {
  validate(in, opt);
  const int64_t rows = in.rows(), V = in.vocab, P = in.pairs(), Tn = in.seq;
  std::vector<RowStats> stats(rows);

  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* z = in.policy + i * V;
      const T* r = in.reference + i * V;
      if (in.labels[i] == kIgnoreIndex) {
        stats[i] = RowStats{};
        stats[i].bad = check_row(z, V).invalid || check_row(r, V).invalid;
      } else {
        stats[i] = row_forward(z, r, V, in.labels[i], opt.entropy);
      }
    }
  });
  for (int64_t i = 0; i < rows; ++i) {
    const T* z = in.policy + i * V;
    if (stats[i].bad) {
      if (first_invalid(z, V) >= 0) throw_invalid_logits("policyLogits", in.policy, in, i, false);
      throw_invalid_logits("referenceLogits", in.reference, in, i, false);
    }
    if (in.labels[i] == kIgnoreIndex) continue;
    if (stats[i].max_z == -INFINITY) throw_invalid_logits("policyLogits", in.policy, in, i, true);
    if (stats[i].max_r == -INFINITY)
      throw_invalid_logits("referenceLogits", in.reference, in, i, true);
  }

  check_labelled_logits(in);

  // Pair sums and the objective, in double; then each row's gradient coefficients (c, a).
  Result res;
  size_pair_fields(res, P, opt);
  std::vector<double> coef_c(rows, 0.0), coef_a(rows, 0.0);
  double total = 0;
  for (int64_t p = 0; p < P; ++p) {
    double m[2] = {0, 0}, k[2] = {0, 0}, lp[2] = {0, 0}, h[2] = {0, 0};
    for (int side = 0; side < 2; ++side) {
      const int64_t row0 = (p + side * P) * Tn;
      for (int64_t t = 0; t < Tn; ++t) {
        if (in.labels[row0 + t] == kIgnoreIndex) continue;
        m[side] += stats[row0 + t].logp - stats[row0 + t].logq;
        lp[side] += stats[row0 + t].logp;
        k[side] += stats[row0 + t].kl;
        h[side] += stats[row0 + t].entropy;
      }
    }
    const PairObjective o = record_pair(res, p, opt, m, k, lp, h);
    total += o.loss;
    const double d[2][2] = {{o.d_mw, o.d_kw}, {o.d_ml, o.d_kl}};
    for (int side = 0; side < 2; ++side) {
      const int64_t row0 = (p + side * P) * Tn;
      for (int64_t t = 0; t < Tn; ++t) {
        coef_c[row0 + t] = d[side][0] / P;  // log pi(y) enters the log-ratio with weight 1
        coef_a[row0 + t] = d[side][1] / P;
      }
    }
  }
  res.loss = total / P;
  if (!opt.grad) return res;

  const auto dtype = std::is_same_v<T, float> ? at::kFloat : at::kDouble;
  // The only [B, T, V] allocation; the caching allocator (common/alloc.h) recycles it across calls.
  res.grad = at::empty({in.batch, in.seq, V}, at::TensorOptions().dtype(dtype));
  T* g = res.grad.template data_ptr<T>();
  // Chosen and rejected rows interleaved: parallel_for hands each thread a contiguous range, and
  // under TDPO2 / DPO chosen rows skip reading r, so plain order would leave one thread idle.
  const int64_t half = rows / 2;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t i = (j & 1) ? half + j / 2 : j / 2;
      if (in.labels[i] == kIgnoreIndex) {
        std::fill(g + i * V, g + (i + 1) * V, T(0));
        continue;
      }
      const RowStats& s = stats[i];
      row_backward(in.policy + i * V, in.reference + i * V, V, in.labels[i], T(s.max_z),
                   T(s.logsum_z), T(s.max_r), T(s.logsum_r), T(coef_c[i]), T(coef_a[i]), g + i * V);
    }
  });
  return res;
}

template Result fused<float>(const Inputs<float>&, const Options&);
template Result fused<double>(const Inputs<double>&, const Options&);

}  // namespace tdpo::loss
