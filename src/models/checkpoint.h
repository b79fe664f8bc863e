// Hugging Face checkpoints in and out: tensors matched to an architecture's parameters by name.
#pragma once

#include <memory>

#include "io/safetensors.h"
#include "models/causal_lm.h"

namespace tdpo::models {

// Every parameter from the sources (names with or without GPT-2's "transformer." prefix; mask
// buffers and a tied lm_head ignored). Throws ERR_TDPO_CHECKPOINT naming the tensor for a missing,
// unexpected, duplicated or wrongly shaped one.
std::unique_ptr<CausalLM> load_model(const ModelConfig& config,
                                     const std::vector<io::TensorSource>& sources,
                                     at::ScalarType dtype, at::Device device = at::kCPU);

// model.safetensors with the canonical (Hugging Face) names.
void save_model(const CausalLM& model, const std::string& path);

}  // namespace tdpo::models
