// JS arguments of the model calls, read into plain C++ values on the JS thread: every property
// first (getters may run arbitrary code), then typed arrays copied, so workers touch no JS memory.
// Checks of the values themselves live in src/ (models::validate*).
#pragma once

#include <napi.h>

#include <ATen/ATen.h>

#include <vector>

#include "io/safetensors.h"
#include "models/causal_lm.h"
#include "models/generate.h"

namespace tdpo::binding {

models::ModelConfig parse_config(Napi::Value v);
std::vector<io::TensorSource> parse_sources(Napi::Value v);
at::ScalarType parse_model_dtype(Napi::Object options);
// options.attnImplementation: 'eager' or 'sdpa' (ERR_TDPO_OPTION where this libtorch has no SDPA).
models::AttentionKernel parse_attention_kernel(Napi::Object options);
at::Device parse_model_device(Napi::Object options);

// ids [B, T], attention mask and labels (either may be undefined), as int64 tensors.
struct Batch {
  at::Tensor ids, mask, labels;
};
Batch parse_batch(const models::ModelConfig& cfg, Napi::Value ids, Napi::Value shape, Napi::Value mask,
                  Napi::Value labels, const std::string& name);

models::SamplingOptions parse_sampling(Napi::Value options, const models::ModelConfig& cfg);
std::vector<std::vector<int32_t>> parse_prompts(Napi::Value prompts, const models::SamplingOptions& o,
                                                const models::ModelConfig& cfg);

}  // namespace tdpo::binding
