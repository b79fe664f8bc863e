// Sampling and sequence scoring on top of a CausalLM.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "models/causal_lm.h"

namespace tdpo::models {

// No defaults here: lib/options.ts holds them and the binding passes every field.
struct SamplingOptions {
  int64_t max_new_tokens = 0;
  double temperature = NAN;  // 0 = greedy
  double top_p = NAN;        // nucleus: keep the smallest set with probability >= top_p
  int64_t top_k = 0;         // 0 = no limit
  uint64_t seed = 0;
  // A row stops after emitting any of these (transformers' eos_token_id may be a list: Llama 3
  // Instruct stops at <|end_of_text|> and <|eot_id|>); empty = none.
  std::vector<int64_t> eos_token_ids;
  bool use_cache = true;      // false re-runs the whole sequence per token (for comparisons)
};

// The checks of this module's inputs; each throws a coded tdpo::Error naming the field.
void validate(const SamplingOptions& options, const ModelConfig& config);
void validate_prompts(const std::vector<std::vector<int32_t>>& prompts, const SamplingOptions& options,
                      const ModelConfig& config);
// Token ids [rows, T] (name: what to call them in messages), optional 0/1 mask, optional labels
// (-100 or a token id) against the model: vocabulary and position table.
void validate_batch(const int32_t* ids, const int32_t* mask, const int32_t* labels, int64_t rows, int64_t T,
                    const ModelConfig& config, const std::string& name);

// Batched generation from prompts of any lengths (left-padded inside, with position ids counted
// over real tokens, as transformers' generate does). Returns each row's new tokens, up to and
// including its first EOS. The same seed gives the same tokens.
std::vector<std::vector<int32_t>> generate(const CausalLM& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const SamplingOptions& options);

// One token per row of probabilities [B, V] (float32, CPU; rows need not sum to exactly 1), drawn
// by inverse CDF from gen; zero-probability tokens are never drawn. ERR_TDPO_LOGITS for a row
// that is NaN, infinite or all zero.
at::Tensor sample_rows(const at::Tensor& probs, at::Generator& gen);

// Next-token choice from [B, V] logits; exposed for tests.
at::Tensor sample_next(const at::Tensor& logits, const SamplingOptions& options, at::Generator& gen);

// log p(labels[b, t] | ...) from logits[b, t] (labels aligned with the logits, as in the loss;
// -100 = not scored, giving 0), their sums per row, and the entropy of each scored position's
// distribution (how diverse the model is where it was scored, without the logits leaving C++).
struct SequenceLogprobs {
  at::Tensor token_logprobs;  // [B, T] float32
  at::Tensor sums;            // [B] float32
  at::Tensor token_entropies;  // [B, T] float32, 0 where not scored
};
SequenceLogprobs sequence_logprobs(const CausalLM& model, const at::Tensor& ids, const at::Tensor& labels,
                                   const at::Tensor& attention_mask);

}  // namespace tdpo::models
