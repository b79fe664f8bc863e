// Sampling and sequence scoring on top of a CausalLM.
#pragma once

#include <cstdint>
#include <vector>

#include "models/causal_lm.h"

namespace tdpo::models {

struct SamplingOptions {
  int64_t max_new_tokens = 32;
  double temperature = 1.0;  // 0 = greedy
  double top_p = 1.0;        // nucleus: keep the smallest set with probability >= top_p
  int64_t top_k = 0;         // 0 = no limit
  uint64_t seed = 0;
  int64_t eos_token_id = -1;  // -1 = none
  bool use_cache = true;      // false re-runs the whole sequence per token (for comparisons)
};

// Batched generation from prompts of any lengths (left-padded inside, with position ids counted
// over real tokens, as transformers' generate does). Returns each row's new tokens, up to and
// including its first EOS. The same seed gives the same tokens.
std::vector<std::vector<int32_t>> generate(const CausalLM& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const SamplingOptions& options);

// Next-token choice from [B, V] logits; exposed for tests.
at::Tensor sample_next(const at::Tensor& logits, const SamplingOptions& options, at::Generator& gen);

// log p(labels[b, t] | ...) from logits[b, t] (labels aligned with the logits, as in the loss;
// -100 = not scored, giving 0), and their sums per row.
struct SequenceLogprobs {
  at::Tensor token_logprobs;  // [B, T] float32
  at::Tensor sums;            // [B] float32
};
SequenceLogprobs sequence_logprobs(const CausalLM& model, const at::Tensor& ids, const at::Tensor& labels,
                                   const at::Tensor& attention_mask);

}  // namespace tdpo::models
