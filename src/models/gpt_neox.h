// GPT-NeoX (Pythia) as in Hugging Face's modeling_gpt_neox.py: fused query_key_value laid out per
// head as [q, k, v], partial rotary embeddings (rotate-half form), parallel or sequential
// residual, exact GELU, untied embed_out.
#pragma once

#include "models/causal_lm.h"

namespace tdpo::models {

std::vector<ParamSpec> gpt_neox_param_specs(const ModelConfig& c);

class GptNeoX : public CausalLM {
 public:
  GptNeoX(const ModelConfig& c, at::ScalarType dtype, at::Device device)
      : CausalLM(c, gpt_neox_param_specs(c), dtype, device) {}
  using CausalLM::hidden;
  at::Tensor hidden(const at::Tensor& ids, const at::Tensor& attention_mask, const at::Tensor& positions,
                    KVCache* cache) const override;
  const at::Tensor& output_weight() const override;
};

}  // namespace tdpo::models
