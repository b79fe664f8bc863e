// The Llama family as in Hugging Face's modeling_llama.py (also Qwen2 and Mistral, which differ
// only in configuration): RMSNorm, rotary embeddings on the whole head (rope_theta, with llama3 or
// linear scaling), grouped-query attention, SwiGLU MLP, optional biases, tied or untied lm_head.
#pragma once

#include "models/causal_lm.h"

namespace tdpo::models {

std::vector<ParamSpec> llama_param_specs(const ModelConfig& c);
// The rotary inverse frequencies [head_dim / 2], float32, as modeling_rope_utils.py computes them.
at::Tensor llama_inv_freq(const ModelConfig& c);

class Llama : public CausalLM {
 public:
  Llama(const ModelConfig& c, at::ScalarType dtype, at::Device device);
  using CausalLM::hidden;
  at::Tensor hidden(const at::Tensor& ids, const at::Tensor& attention_mask, const at::Tensor& positions,
                    KVCache* cache) const override;
  const at::Tensor& output_weight() const override;

 private:
  // Where each layer's tensors start in params(), and which of them exist (-1: no such bias).
  struct Layer {
    size_t first, count;
    int64_t norm1, q, qb, k, kb, v, vb, o, ob, norm2, gate, gb, up, ub, down, db;
  };
  std::vector<Layer> layers_;
  size_t final_norm_ = 0, head_ = 0;
  at::Tensor inv_freq_;
};

}  // namespace tdpo::models
