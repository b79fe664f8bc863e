// The fused kernel's per-row work (fused.cc), shared by the loss over logits (fused.cc) and the
// fused linear loss over hidden states (fused_linear.cc), which feeds it one chunk of rows at a time.
#pragma once

#include <cstdint>

namespace tdpo::loss::detail {

// lse = max + log(sum): kept apart so that the backward pass computes exp((x - max) - log sum),
// where x - max is exact near the max, instead of x - lse with lse rounded to the inputs' precision
// (at logit scale 1e4 a float lse is off by ~1e-3, which would shift every probability by 0.1%).
struct RowStats {
  double max_z, logsum_z, max_r, logsum_r, logp, logq, kl;
  double entropy;  // H(pi(.|t)): the policy's own entropy at this row (row_forward's entropy flag)
  bool bad;  // NaN or +inf somewhere in z or r
};

// One scored row: policy logits z, reference logits r (n each), label y. max_z / max_r = -inf
// means a row of only -inf logits (no distribution); bad = NaN or +inf seen.
// entropy: also RowStats::entropy (else NaN), at 2-3% more time (scripts/bench-entropy.mjs).
RowStats row_forward(const float* z, const float* r, int64_t n, int32_t y, bool entropy);
RowStats row_forward(const double* z, const double* r, int64_t n, int32_t y, bool entropy);

// g = c (1[v = y] - p) + a (p - q) with p, q recomputed from the row's saved statistics. g may be z
// itself (each entry is read before it is written). With a = 0, r is not read.
void row_backward(const float* z, const float* r, int64_t n, int32_t y, float mz, float lsz, float mr,
                  float lsr, float c, float a, float* g);
void row_backward(const double* z, const double* r, int64_t n, int32_t y, double mz, double lsz,
                  double mr, double lsr, double c, double a, double* g);

}  // namespace tdpo::loss::detail
