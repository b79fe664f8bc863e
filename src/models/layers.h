// The pieces both architectures share.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <utility>

#include "models/causal_lm.h"

namespace tdpo::models {

// Which keys each query of one forward pass may see, built once per pass for every layer:
// query i (absolute position past + i) sees keys j <= past + i, and, with a [B, past + T] key
// mask (1 = token), only real tokens.
struct AttentionMask {
  AttentionKernel kernel = AttentionKernel::Eager;
  // Eager: [B or 1, 1, T, past + T] booleans (true: may attend).
  at::Tensor allowed;
  // SDPA with a key mask or a cache: the same as an additive bias in the model's dtype, made once
  // here rather than converted from booleans in every layer: 0, or the dtype's lowest finite
  // value, as Hugging Face's masks are. Not -inf: libtorch 2.3-2.4.0's CPU flash kernel made a
  // row NaN when a whole block of its keys (512) was masked, and a query with no allowed key
  // (left padding) would be NaN or zeros depending on the kernel. With a finite bias such a row
  // is uniform, as under eager, and every row is the same function under both.
  at::Tensor bias;
  // SDPA without a key mask or a cache: the causal triangle alone, which SDPA takes as is_causal
  // (the only form its flash kernel accepts); neither tensor is made.
  bool causal_only = false;
};

// The lowest finite value of a model's dtype (float32 or bfloat16).
inline double lowest_of(at::ScalarType dtype) {
  return dtype == at::kBFloat16 ? static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest())
                                : std::numeric_limits<float>::lowest();
}

inline AttentionMask attention_mask_for(int64_t T, int64_t past, const at::Tensor& attention_mask, at::Device device,
                                        AttentionKernel kernel, at::ScalarType dtype) {
  AttentionMask m;
  m.kernel = kernel;
  if (kernel == AttentionKernel::Sdpa && past == 0 && !attention_mask.defined()) {
    m.causal_only = true;
    return m;
  }
  at::Tensor causal = at::ones({T, past + T}, at::TensorOptions().dtype(at::kBool).device(device)).tril(past);
  at::Tensor allowed = causal.view({1, 1, T, past + T});
  if (attention_mask.defined()) allowed = allowed & attention_mask.to(at::kBool).view({-1, 1, 1, past + T});
  if (kernel == AttentionKernel::Eager) {
    m.allowed = allowed;
    return m;
  }
  m.bias = at::zeros(allowed.sizes(), at::TensorOptions().dtype(dtype).device(device))
               .masked_fill_(allowed.logical_not(), at::Scalar(lowest_of(dtype)));
  return m;
}

// Appends this step's keys and values ([B, H, T, D]) to a layer's cache and returns the keys and
// values of every position so far; without a cache, returns them unchanged.
inline std::pair<at::Tensor, at::Tensor> cached_kv(KVCache* cache, size_t layer, const at::Tensor& k,
                                                   const at::Tensor& v) {
  if (cache == nullptr) return {k, v};
  if (cache->k.size() <= layer) {
    auto shape = k.sizes().vec();
    shape[2] = cache->capacity;
    cache->k.push_back(at::empty(shape, k.options()));
    cache->v.push_back(at::empty(shape, v.options()));
  }
  const int64_t past = cache->length, T = k.size(2);
  cache->k[layer].slice(2, past, past + T).copy_(k);
  cache->v[layer].slice(2, past, past + T).copy_(v);
  return {cache->k[layer].slice(2, 0, past + T), cache->v[layer].slice(2, 0, past + T)};
}

// Scaled dot-product attention, q/k/v [B, H, T, D] (attention.cc). Eager: scores, masking and
// softmax in float32 (as Hugging Face upcasts for reduced precision); masked scores get float32's
// lowest value, as in its eager attention, so a row with no allowed key (a left-padding query) is
// uniform, not NaN. SDPA: libtorch's at::scaled_dot_product_attention, which picks a fused kernel
// (flash or memory-efficient on CUDA, flash on CPU) that never materialises the [B, H, T, S] scores.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask);

// GPT-2's "gelu_new" (the tanh approximation) as one ATen op: autograd then keeps only its input,
// where the formula written out op by op kept four [B, T, 4H] tensors per block (3.6 GB at
// GPT-2-small, 8 pairs x 512 tokens) and made as many more in the backward pass.
inline at::Tensor gelu_tanh(const at::Tensor& x) { return at::gelu(x, "tanh"); }

}  // namespace tdpo::models
