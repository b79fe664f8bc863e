#include "models/gpt2.h"

#include "models/layers.h"

namespace tdpo::models {

// Parameter order: wte, wpe, then per layer 12 tensors, then ln_f (see kPerLayer below).
namespace {
constexpr size_t kPerLayer = 12;
const char* const kLayerNames[kPerLayer] = {
    "ln_1.weight",      "ln_1.bias",        "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",       "ln_2.bias",
    "mlp.c_fc.weight",  "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias"};
}  // namespace

std::vector<ParamSpec> gpt2_param_specs(const ModelConfig& c) {
  const int64_t C = c.hidden, I = c.intermediate;
  std::vector<ParamSpec> s = {{"transformer.wte.weight", {c.vocab_size, C}},
                              {"transformer.wpe.weight", {c.max_positions, C}}};
  const std::vector<std::vector<int64_t>> shapes = {{C}, {C}, {C, 3 * C}, {3 * C}, {C, C}, {C},
                                                    {C}, {C}, {C, I},     {I},     {I, C}, {C}};
  for (int64_t l = 0; l < c.layers; ++l) {
    for (size_t k = 0; k < kPerLayer; ++k) {
      s.push_back({"transformer.h." + std::to_string(l) + "." + kLayerNames[k], shapes[k]});
    }
  }
  s.push_back({"transformer.ln_f.weight", {C}});
  s.push_back({"transformer.ln_f.bias", {C}});
  return s;
}

at::Tensor Gpt2::hidden(const at::Tensor& ids, const at::Tensor& attention_mask, const at::Tensor& positions,
                        KVCache* cache) const {
  const int64_t C = config_.hidden, H = config_.heads, D = C / H;
  const int64_t past = cache ? cache->length : 0;
  const double eps = config_.layer_norm_eps;
  at::Tensor x = at::embedding(p(0), ids) + at::embedding(p(1), positions);
  const AttentionMask allowed = attention_mask_for(ids.size(1), past, attention_mask, ids.device(), attention_kernel_, dtype_);
  // Conv1D: y = x W + b with W stored [in, out].
  auto conv1d = [](const at::Tensor& in, const at::Tensor& w, const at::Tensor& b) {
    return at::addmm(b, in.reshape({-1, in.size(-1)}), w).view({in.size(0), in.size(1), w.size(1)});
  };
  for (int64_t l = 0; l < config_.layers; ++l) {
    const size_t o = 2 + l * kPerLayer;
    // Captures by value: under gradient checkpointing it runs again in the backward pass.
    auto block = [this, o, l, C, H, D, eps, allowed, cache, conv1d](const at::Tensor& x) {
      const int64_t B = x.size(0), T = x.size(1);
      at::Tensor a = at::layer_norm(x, {C}, p(o + 0), p(o + 1), eps);
      at::Tensor qkv = conv1d(a, p(o + 2), p(o + 3));
      auto parts = qkv.split(C, -1);
      auto heads = [&](const at::Tensor& t) { return t.view({B, T, H, D}).transpose(1, 2); };
      auto [k, v] = cached_kv(cache, l, heads(parts[1]), heads(parts[2]));
      at::Tensor y = attention(heads(parts[0]), k, v, allowed);
      y = y.transpose(1, 2).reshape({B, T, C});
      at::Tensor h = x + conv1d(y, p(o + 4), p(o + 5));
      at::Tensor m = at::layer_norm(h, {C}, p(o + 6), p(o + 7), eps);
      m = conv1d(gelu_tanh(conv1d(m, p(o + 8), p(o + 9))), p(o + 10), p(o + 11));
      return h + m;
    };
    x = run_block(block, x, o, kPerLayer, cache);
  }
  if (cache) cache->length += ids.size(1);
  const size_t f = 2 + config_.layers * kPerLayer;
  return at::layer_norm(x, {C}, p(f), p(f + 1), eps);
}

const at::Tensor& Gpt2::output_weight() const { return p(0); }

}  // namespace tdpo::models
