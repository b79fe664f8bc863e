#include "models/generate.h"

#include <ATen/core/DistributionsHelper.h>
#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>

#include "common/error.h"

namespace tdpo::models {

void validate(const SamplingOptions& o, const ModelConfig&) {
  if (o.max_new_tokens < 1) throw range_error("ERR_TDPO_OPTION", "options.maxNewTokens must be an integer >= 1");
  if (!(o.temperature >= 0 && std::isfinite(o.temperature)))
    throw range_error("ERR_TDPO_OPTION", "options.temperature must be a finite number >= 0, got " + js_number(o.temperature));
  if (!(o.top_p > 0 && o.top_p <= 1))
    throw range_error("ERR_TDPO_OPTION", "options.topP must be in (0, 1], got " + js_number(o.top_p));
  if (o.top_k < 0) throw range_error("ERR_TDPO_OPTION", "options.topK must be an integer >= 0");
}

void validate_prompts(const std::vector<std::vector<int32_t>>& prompts, const SamplingOptions& o,
                      const ModelConfig& cfg) {
  if (prompts.empty()) throw type_error("ERR_TDPO_TYPE", "generate(prompts): prompts must be a non-empty array of Int32Array");
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string name = "prompts[" + std::to_string(i) + "]";
    const auto& p = prompts[i];
    if (p.empty()) throw range_error("ERR_TDPO_INPUT", name + " is empty");
    if (int64_t(p.size()) + o.max_new_tokens > cfg.max_positions) {
      throw range_error("ERR_TDPO_INPUT", name + " has " + std::to_string(p.size()) + " tokens; with maxNewTokens " +
                                              std::to_string(o.max_new_tokens) + " that exceeds the model's " +
                                              std::to_string(cfg.max_positions) + " positions");
    }
    for (size_t t = 0; t < p.size(); ++t) {
      if (p[t] < 0 || p[t] >= cfg.vocab_size)
        throw range_error("ERR_TDPO_INPUT", name + "[" + std::to_string(t) + "] = " + std::to_string(p[t]) +
                                                " is outside the vocabulary [0, " + std::to_string(cfg.vocab_size) + ")");
    }
  }
}

void validate_batch(const int32_t* ids, const int32_t* mask, const int32_t* labels, int64_t rows, int64_t T,
                    const ModelConfig& cfg, const std::string& name) {
  if (T > cfg.max_positions) {
    throw range_error("ERR_TDPO_INPUT", name + " sequence length " + std::to_string(T) + " exceeds the model's " +
                                            std::to_string(cfg.max_positions) + " positions");
  }
  for (int64_t i = 0; i < rows * T; ++i) {
    if (ids[i] < 0 || ids[i] >= cfg.vocab_size) {
      throw range_error("ERR_TDPO_INPUT", name + " inputIds[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
                                              " is outside the vocabulary [0, " + std::to_string(cfg.vocab_size) + ")");
    }
    if (mask && mask[i] != 0 && mask[i] != 1)
      throw range_error("ERR_TDPO_INPUT", name + " attentionMask[" + std::to_string(i) + "] must be 0 or 1");
    if (labels && labels[i] != -100 && (labels[i] < 0 || labels[i] >= cfg.vocab_size)) {
      throw range_error("ERR_TDPO_LABEL", name + " labels[" + std::to_string(i) + "] is " + std::to_string(labels[i]) +
                                              ": labels must be in [0, " + std::to_string(cfg.vocab_size) + ") or -100");
    }
  }
}

[[noreturn]] static void refuse_row(int64_t b) {
  throw range_error("ERR_TDPO_LOGITS", "generate: row " + std::to_string(b) +
                                           "'s next-token logits are not finite (NaN or infinity), so no token can be sampled");
}

// One token per row of probabilities [B, V] (float, CPU), by inverse CDF: one uniform draw per row,
// then a walk along the row until the running sum passes it. at::multinomial draws V exponentials
// per row instead (PyTorch's exponential trick): about 200 ms a step for 1,024 rows of 8,192 on the
// 2-core VM, against a few ms here (scripts/bench-sampling.mjs). The draws come from the seeded
// generator in row order before the rows are walked in parallel, so the tokens do not depend on
// the thread count.
at::Tensor sample_rows(const at::Tensor& probs_in, at::Generator& gen) {
  const at::Tensor probs = probs_in.contiguous();
  const int64_t B = probs.size(0), V = probs.size(1);
  std::vector<double> draws(B);
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    auto* g = at::check_generator<at::CPUGeneratorImpl>(gen);
    at::uniform_real_distribution<double> uniform(0.0, 1.0);
    for (auto& u : draws) u = uniform(g);
  }
  at::Tensor out = at::empty({B}, at::kLong);
  const float* p = probs.data_ptr<float>();
  int64_t* tok = out.data_ptr<int64_t>();
  std::vector<char> bad(B, 0);
  at::parallel_for(0, B, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float* row = p + b * V;
      double total = 0;
      for (int64_t v = 0; v < V; ++v) total += row[v];
      // NaN or inf logits give NaN probabilities: no token can be chosen.
      if (!(total > 0) || !std::isfinite(total)) {
        bad[b] = 1;
        continue;
      }
      const double target = draws[b] * total;
      double acc = 0;
      int64_t last = -1, pick = -1;
      for (int64_t v = 0; v < V; ++v) {
        if (!(row[v] > 0)) continue;  // masked (top-k, top-p) or underflowed: never chosen
        last = v;
        acc += row[v];
        if (acc > target) {
          pick = v;
          break;
        }
      }
      // Rounding can leave the sum a hair under target for a draw near 1: the last token it reached.
      tok[b] = pick >= 0 ? pick : last;
    }
  });
  for (int64_t b = 0; b < B; ++b) {
    if (bad[b]) refuse_row(b);
  }
  return out;
}

at::Tensor sample_next(const at::Tensor& logits_in, const SamplingOptions& o, at::Generator& gen) {
  at::Tensor logits = logits_in.to(at::kFloat);
  // A temperature that is 0 in float32 (1e-46), or a denormal that a flush-to-zero CPU makes 0,
  // would divide 0 by 0: its limit is greedy too.
  if (o.temperature < std::numeric_limits<float>::min()) {
    // NaN would make argmax pick token 0 (or wherever the NaN is) as if it were a choice.
    // One check (one device sync) per step; the rows are looked at only to name the bad one.
    at::Tensor finite = at::isfinite(logits).all(-1);
    if (!finite.all().item<bool>()) refuse_row((~finite).to(at::kLong).argmax().item<int64_t>());
    return logits.argmax(-1);
  }
  // Shifted by the row's maximum first, so that a tiny temperature sharpens towards greedy rather
  // than overflowing to infinity (softmax shifts the same way, so at temperature 1 nothing changes).
  logits = (logits - std::get<0>(logits.max(-1, /*keepdim=*/true))) / o.temperature;
  if (o.top_k > 0 && o.top_k < logits.size(-1)) {
    at::Tensor kth = std::get<0>(logits.topk(o.top_k, -1)).select(-1, o.top_k - 1).unsqueeze(-1);
    logits = logits.masked_fill(logits < kth, -INFINITY);
  }
  if (o.top_p < 1.0) {
    auto [sorted, order] = logits.sort(-1, /*descending=*/true);
    at::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
    // Drop a token when the tokens ranked above it already reach top_p; the first always stays.
    at::Tensor drop = (cumulative - sorted.softmax(-1)) >= o.top_p;
    drop.narrow(-1, 0, 1).fill_(false);  // even a top_p that is 0 in float32 (1e-50)
    logits = logits.masked_fill(at::zeros_like(drop).scatter(-1, order, drop), -INFINITY);
  }
  return sample_rows(logits.softmax(-1), gen);
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
      if (std::find(o.eos_token_ids.begin(), o.eos_token_ids.end(), tok) != o.eos_token_ids.end()) done[b] = true;
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
  // One temporary of the logits' size; p log p is 0 where logp is -inf (exp · logp would be NaN).
  at::Tensor plogp = logp.exp().mul_(logp);
  plogp.masked_fill_(at::isneginf(logp), 0);
  at::Tensor entropy = -plogp.sum(-1);
  entropy = at::where(scored, entropy, at::zeros_like(entropy));
  return {token.contiguous(), token.sum(-1).contiguous(), entropy.contiguous()};
}

}  // namespace tdpo::models
