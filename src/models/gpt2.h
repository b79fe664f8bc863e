// GPT-2 as in Hugging Face's modeling_gpt2.py: learned positions, Conv1D weights stored [in, out],
// pre-norm blocks, gelu_new, lm_head tied to wte.
#pragma once

#include "models/causal_lm.h"

namespace tdpo::models {

std::vector<ParamSpec> gpt2_param_specs(const ModelConfig& c);

class Gpt2 : public CausalLM {
 public:
  Gpt2(const ModelConfig& c, at::ScalarType dtype, at::Device device)
      : CausalLM(c, gpt2_param_specs(c), dtype, device) {}
  using CausalLM::hidden;
  at::Tensor hidden(const at::Tensor& ids, const at::Tensor& attention_mask, const at::Tensor& positions,
                    KVCache* cache) const override;
  const at::Tensor& output_weight() const override;
};

}  // namespace tdpo::models
