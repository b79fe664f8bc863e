#include "models/generate.h"

#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "common/error.h"

namespace tdpo::models {

at::Tensor sample_next(const at::Tensor& logits_in, const SamplingOptions& o, at::Generator& gen) {
  at::Tensor logits = logits_in.to(at::kFloat);
  if (o.temperature == 0) return logits.argmax(-1);
  logits = logits / o.temperature;
  if (o.top_k > 0 && o.top_k < logits.size(-1)) {
    at::Tensor kth = std::get<0>(logits.topk(o.top_k, -1)).select(-1, o.top_k - 1).unsqueeze(-1);
    logits = logits.masked_fill(logits < kth, -INFINITY);
  }
  if (o.top_p < 1.0) {
    auto [sorted, order] = logits.sort(-1, /*descending=*/true);
    at::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
    // Drop a token when the tokens ranked above it already reach top_p; the first always stays.
    at::Tensor drop = (cumulative - sorted.softmax(-1)) >= o.top_p;
    logits = logits.masked_fill(at::zeros_like(drop).scatter(-1, order, drop), -INFINITY);
  }
  return at::multinomial(logits.softmax(-1), 1, false, gen).squeeze(-1);
}

std::vector<std::vector<int32_t>> generate(const CausalLM& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const SamplingOptions& o) {
  at::NoGradGuard no_grad;
  const int64_t B = static_cast<int64_t>(prompts.size());
  int64_t L = 0;
  for (const auto& p : prompts) L = std::max<int64_t>(L, p.size());
  at::Tensor ids = at::zeros({B, L}, at::kLong);
  at::Tensor mask = at::zeros({B, L}, at::kLong);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = prompts[b].size(), pad = L - n;
    for (int64_t t = 0; t < n; ++t) ids[b][pad + t] = prompts[b][t];
    mask[b].slice(0, pad).fill_(1);
  }
  const at::Device device = model.device();
  ids = ids.to(device);
  mask = mask.to(device);
  at::Tensor positions = (mask.cumsum(1) - 1).clamp_min(0);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);

  KVCache cache(L + o.max_new_tokens);
  at::Tensor seq = ids;  // the whole sequence so far, for the no-cache path
  at::Tensor logits = o.use_cache ? model.forward(ids, mask, positions, &cache) : model.forward(ids, mask, positions, nullptr);
  std::vector<std::vector<int32_t>> out(B);
  std::vector<bool> done(B, false);
  at::Tensor last_pos = positions.select(1, L - 1);
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    // Sampling runs on the CPU (one [B, V] row per step), where the seeded generator lives.
    at::Tensor next = sample_next(logits.select(1, logits.size(1) - 1).to(at::kCPU), o, gen);
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      const int32_t tok = static_cast<int32_t>(next[b].item<int64_t>());  // next is on the CPU here
      out[b].push_back(tok);
      if (tok == o.eos_token_id) done[b] = true;
      all_done = all_done && done[b];
    }
    if (all_done || step + 1 == o.max_new_tokens) break;
    next = next.to(device);
    mask = at::cat({mask, at::ones({B, 1}, mask.options())}, 1);
    last_pos = last_pos + 1;
    if (o.use_cache) {
      logits = model.forward(next.unsqueeze(1), mask, last_pos.unsqueeze(1), &cache);
    } else {
      seq = at::cat({seq, next.unsqueeze(1)}, 1);
      positions = at::cat({positions, last_pos.unsqueeze(1)}, 1);
      logits = model.forward(seq, mask, positions, nullptr);
    }
  }
  return out;
}

SequenceLogprobs sequence_logprobs(const CausalLM& model, const at::Tensor& ids, const at::Tensor& labels,
                                   const at::Tensor& attention_mask) {
  at::NoGradGuard no_grad;
  at::Tensor logp = model.forward(ids, attention_mask).to(at::kFloat).log_softmax(-1);
  at::Tensor scored = labels != -100;
  at::Tensor token = logp.gather(-1, labels.masked_fill(~scored, 0).unsqueeze(-1)).squeeze(-1);
  token = at::where(scored, token, at::zeros_like(token));
  return {token.contiguous(), token.sum(-1).contiguous()};
}

}  // namespace tdpo::models
