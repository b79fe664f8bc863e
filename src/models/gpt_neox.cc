#include "models/gpt_neox.h"

#include "models/layers.h"

namespace tdpo::models {

namespace {
constexpr size_t kPerLayer = 12;
const char* const kLayerNames[kPerLayer] = {
    "input_layernorm.weight",          "input_layernorm.bias",
    "post_attention_layernorm.weight", "post_attention_layernorm.bias",
    "attention.query_key_value.weight", "attention.query_key_value.bias",
    "attention.dense.weight",          "attention.dense.bias",
    "mlp.dense_h_to_4h.weight",        "mlp.dense_h_to_4h.bias",
    "mlp.dense_4h_to_h.weight",        "mlp.dense_4h_to_h.bias"};

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.slice(-1, h), x.slice(-1, 0, h)}, -1);
}
}  // namespace

std::vector<ParamSpec> gpt_neox_param_specs(const ModelConfig& c) {
  const int64_t C = c.hidden, I = c.intermediate;
  std::vector<ParamSpec> s = {{"gpt_neox.embed_in.weight", {c.vocab_size, C}}};
  // nn.Linear weights are [out, in].
  const std::vector<std::vector<int64_t>> shapes = {{C}, {C}, {C}, {C}, {3 * C, C}, {3 * C},
                                                    {C, C}, {C}, {I, C}, {I},    {C, I},  {C}};
  for (int64_t l = 0; l < c.layers; ++l) {
    for (size_t k = 0; k < kPerLayer; ++k) {
      s.push_back({"gpt_neox.layers." + std::to_string(l) + "." + kLayerNames[k], shapes[k]});
    }
  }
  s.push_back({"gpt_neox.final_layer_norm.weight", {C}});
  s.push_back({"gpt_neox.final_layer_norm.bias", {C}});
  s.push_back({"embed_out.weight", {c.vocab_size, C}});
  return s;
}

at::Tensor GptNeoX::hidden(const at::Tensor& ids, const at::Tensor& attention_mask, const at::Tensor& positions,
                           KVCache* cache) const {
  const int64_t C = config_.hidden, H = config_.heads;
  const int64_t past = cache ? cache->length : 0;
  const int64_t D = C / H;
  const int64_t rot = static_cast<int64_t>(D * config_.rotary_pct);
  const double eps = config_.layer_norm_eps;
  at::Tensor x = at::embedding(p(0), ids);
  const AttentionMask allowed = attention_mask_for(ids.size(1), past, attention_mask, ids.device(), attention_kernel_, dtype_);

  // Rotary tables in float32, as Hugging Face computes them, then cast to the model's dtype.
  at::Tensor inv_freq =
      1.0 / at::pow(config_.rotary_base,
                    at::arange(0, rot, 2, ids.options()).to(at::kFloat) / double(rot));
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, T, rot / 2]
  at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(1);              // [B, 1, T, rot]
  const at::Tensor cos = emb.cos().to(dtype_), sin = emb.sin().to(dtype_);
  auto rotary = [cos, sin, rot, D](const at::Tensor& t) {  // t: [B, H, T, D]
    at::Tensor r = t.slice(-1, 0, rot);
    at::Tensor rotated = r * cos + rotate_half(r) * sin;
    return rot == D ? rotated : at::cat({rotated, t.slice(-1, rot)}, -1);
  };
  const bool parallel = config_.parallel_residual;

  for (int64_t l = 0; l < config_.layers; ++l) {
    const size_t o = 1 + l * kPerLayer;
    // Captures by value: under gradient checkpointing it runs again in the backward pass.
    auto block = [this, o, l, C, H, D, eps, allowed, cache, rotary, parallel](const at::Tensor& x) {
      const int64_t B = x.size(0), T = x.size(1);
      at::Tensor a = at::layer_norm(x, {C}, p(o + 0), p(o + 1), eps);
      at::Tensor qkv = at::linear(a, p(o + 4), p(o + 5)).view({B, T, H, 3 * D}).permute({0, 2, 1, 3});
      at::Tensor q = rotary(qkv.slice(-1, 0, D));
      auto [k, v] = cached_kv(cache, l, rotary(qkv.slice(-1, D, 2 * D)), qkv.slice(-1, 2 * D));
      at::Tensor y = attention(q, k, v, allowed).permute({0, 2, 1, 3}).reshape({B, T, C});
      y = at::linear(y, p(o + 6), p(o + 7));
      auto mlp = [&](const at::Tensor& in) {
        at::Tensor h = at::layer_norm(in, {C}, p(o + 2), p(o + 3), eps);
        return at::linear(at::gelu(at::linear(h, p(o + 8), p(o + 9))), p(o + 10), p(o + 11));
      };
      if (parallel) return x + y + mlp(x);
      at::Tensor h = x + y;
      return h + mlp(h);
    };
    x = run_block(block, x, o, kPerLayer, cache);
  }
  if (cache) cache->length += ids.size(1);
  const size_t f = 1 + config_.layers * kPerLayer;
  return at::layer_norm(x, {C}, p(f), p(f + 1), eps);
}

const at::Tensor& GptNeoX::output_weight() const { return p(1 + config_.layers * kPerLayer + 2); }

}  // namespace tdpo::models
