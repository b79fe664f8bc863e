// The pieces both architectures share.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace tdpo::models {

// [T, T] causal mask, optionally combined with a [B, T] key mask (1 = attend): true = allowed.
inline at::Tensor allowed_mask(int64_t T, const at::Tensor& attention_mask) {
  at::Tensor causal = at::ones({T, T}, at::kBool).tril();
  if (!attention_mask.defined()) return causal.view({1, 1, T, T});
  return causal.view({1, 1, T, T}) & attention_mask.to(at::kBool).view({-1, 1, 1, T});
}

// Scaled dot-product attention, q/k/v [B, H, T, D]. Scores, masking and softmax in float32 (as
// Hugging Face upcasts for reduced precision); masked scores get float32's lowest value, as in its
// eager attention, so a row with no allowed key (a left-padding query) is uniform, not NaN.
inline at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& allowed) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).to(at::kFloat).mul_(scale);
  scores = scores.masked_fill(allowed.logical_not(), std::numeric_limits<float>::lowest());
  return at::matmul(at::softmax(scores, -1).to(q.scalar_type()), v);
}

// GPT-2's "gelu_new": the tanh approximation.
inline at::Tensor gelu_tanh(const at::Tensor& x) {
  const double c = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + at::tanh(c * (x + 0.044715 * at::pow(x, 3))));
}

}  // namespace tdpo::models
