#include "models/llama.h"

#include <cmath>

#include "common/error.h"
#include "models/layers.h"

namespace tdpo::models {

namespace {
int64_t head_dim_of(const ModelConfig& c) { return c.head_dim > 0 ? c.head_dim : c.hidden / c.heads; }

// One layer's parameters in checkpoint order, biases where the config has them.
std::vector<ParamSpec> layer_specs(const ModelConfig& c, int64_t l) {
  const int64_t C = c.hidden, I = c.intermediate, D = head_dim_of(c), Q = c.heads * D, KV = c.kv_heads * D;
  const std::string at = "model.layers." + std::to_string(l) + ".";
  std::vector<ParamSpec> s = {{at + "input_layernorm.weight", {C}}};
  auto linear = [&](const std::string& name, int64_t out, int64_t in, bool bias) {
    s.push_back({at + name + ".weight", {out, in}});  // nn.Linear: [out, in]
    if (bias) s.push_back({at + name + ".bias", {out}});
  };
  linear("self_attn.q_proj", Q, C, c.qkv_bias);
  linear("self_attn.k_proj", KV, C, c.qkv_bias);
  linear("self_attn.v_proj", KV, C, c.qkv_bias);
  linear("self_attn.o_proj", C, Q, c.o_bias);
  s.push_back({at + "post_attention_layernorm.weight", {C}});
  linear("mlp.gate_proj", I, C, c.mlp_bias);
  linear("mlp.up_proj", I, C, c.mlp_bias);
  linear("mlp.down_proj", C, I, c.mlp_bias);
  return s;
}

// RMSNorm as LlamaRMSNorm: the mean square in float32, the weight applied in the model's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  at::Tensor h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, true) + eps);
  return w * h.to(x.scalar_type());
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.slice(-1, h), x.slice(-1, 0, h)}, -1);
}
}  // namespace

std::vector<ParamSpec> llama_param_specs(const ModelConfig& c) {
  std::vector<ParamSpec> s = {{"model.embed_tokens.weight", {c.vocab_size, c.hidden}}};
  for (int64_t l = 0; l < c.layers; ++l) {
    auto layer = layer_specs(c, l);
    s.insert(s.end(), layer.begin(), layer.end());
  }
  s.push_back({"model.norm.weight", {c.hidden}});
  if (!c.tie_embeddings) s.push_back({"lm_head.weight", {c.vocab_size, c.hidden}});
  return s;
}

at::Tensor llama_inv_freq(const ModelConfig& c) {
  const int64_t D = head_dim_of(c);
  // Float32 throughout, as transformers computes them (its inv_freq buffer is float32).
  at::Tensor inv = 1.0 / at::pow(c.rotary_base, at::arange(0, D, 2, at::kLong).to(at::kFloat) / double(D));
  if (c.rope_type == "linear") return inv / c.rope_factor;
  if (c.rope_type != "llama3") return inv;
  // Llama 3.1's scaling (_compute_llama3_parameters): long wavelengths slowed by `factor`, short
  // ones kept, the band between interpolated.
  const double old_len = double(c.rope_original_max_positions);
  const double low_wavelen = old_len / c.rope_low_freq_factor, high_wavelen = old_len / c.rope_high_freq_factor;
  at::Tensor wavelen = 2 * M_PI / inv;
  at::Tensor scaled = at::where(wavelen > low_wavelen, inv / c.rope_factor, inv);
  at::Tensor smooth = (old_len / wavelen - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / c.rope_factor + smooth * scaled;
  at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return at::where(medium, smoothed, scaled);
}

Llama::Llama(const ModelConfig& c, at::ScalarType dtype, at::Device device)
    : CausalLM(c, llama_param_specs(c), dtype, device), inv_freq_(llama_inv_freq(c).to(device)) {
  size_t i = 1;
  for (int64_t l = 0; l < c.layers; ++l) {
    Layer L{};
    L.first = i;
    auto take = [&](bool present) { return present ? static_cast<int64_t>(i++) : int64_t(-1); };
    L.norm1 = take(true);
    L.q = take(true), L.qb = take(c.qkv_bias);
    L.k = take(true), L.kb = take(c.qkv_bias);
    L.v = take(true), L.vb = take(c.qkv_bias);
    L.o = take(true), L.ob = take(c.o_bias);
    L.norm2 = take(true);
    L.gate = take(true), L.gb = take(c.mlp_bias);
    L.up = take(true), L.ub = take(c.mlp_bias);
    L.down = take(true), L.db = take(c.mlp_bias);
    L.count = i - L.first;
    layers_.push_back(L);
  }
  final_norm_ = i;
  head_ = c.tie_embeddings ? 0 : i + 1;
}

at::Tensor Llama::hidden(const at::Tensor& ids, const at::Tensor& attention_mask, const at::Tensor& positions,
                         KVCache* cache) const {
  const int64_t past = cache ? cache->length : 0;
  const int64_t T_all = past + ids.size(1);
  if (config_.sliding_window > 0 && T_all > config_.sliding_window) {
    // Beyond the window transformers' attention drops the oldest keys; ours would not.
    throw range_error("ERR_TDPO_INPUT", "this model's sliding_window is " + std::to_string(config_.sliding_window) +
                                            " positions and the sequence reaches " + std::to_string(T_all) +
                                            "; sliding-window attention is not implemented");
  }
  const int64_t H = config_.heads, KV = config_.kv_heads, D = head_dim_of(config_);
  const double eps = config_.layer_norm_eps;
  at::Tensor x = at::embedding(p(0), ids);
  const AttentionMask allowed = attention_mask_for(ids.size(1), past, attention_mask, ids.device(), attention_kernel_, dtype_);

  // cos/sin in float32 as LlamaRotaryEmbedding computes them, then the model's dtype.
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq_;  // [B, T, D / 2]
  at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(1);              // [B, 1, T, D]
  const at::Tensor cos = emb.cos().to(dtype_), sin = emb.sin().to(dtype_);
  auto rotary = [cos, sin](const at::Tensor& t) { return t * cos + rotate_half(t) * sin; };
  auto opt = [this](int64_t i) { return i < 0 ? at::Tensor() : p(static_cast<size_t>(i)); };

  for (int64_t l = 0; l < config_.layers; ++l) {
    const Layer L = layers_[l];
    // Captures by value: under gradient checkpointing it runs again in the backward pass.
    auto block = [this, L, l, H, KV, D, eps, allowed, cache, rotary, opt](const at::Tensor& x) {
      const int64_t B = x.size(0), T = x.size(1);
      at::Tensor a = rms_norm(x, p(L.norm1), eps);
      auto heads = [&](const at::Tensor& t, int64_t n) { return t.view({B, T, n, D}).transpose(1, 2); };
      at::Tensor q = rotary(heads(at::linear(a, p(L.q), opt(L.qb)), H));
      at::Tensor k = rotary(heads(at::linear(a, p(L.k), opt(L.kb)), KV));
      at::Tensor v = heads(at::linear(a, p(L.v), opt(L.vb)), KV);
      // The cache keeps the KV heads; each serves H / KV query heads (transformers' repeat_kv).
      auto [ck, cv] = cached_kv(cache, l, k, v);
      if (KV != H) {
        ck = ck.repeat_interleave(H / KV, 1);
        cv = cv.repeat_interleave(H / KV, 1);
      }
      at::Tensor y = attention(q, ck, cv, allowed).transpose(1, 2).reshape({B, T, H * D});
      at::Tensor h = x + at::linear(y, p(L.o), opt(L.ob));
      at::Tensor m = rms_norm(h, p(L.norm2), eps);
      m = at::linear(at::silu(at::linear(m, p(L.gate), opt(L.gb))) * at::linear(m, p(L.up), opt(L.ub)), p(L.down),
                     opt(L.db));
      return h + m;
    };
    x = run_block(block, x, L.first, L.count, cache);
  }
  if (cache) cache->length += ids.size(1);
  return rms_norm(x, p(final_norm_), eps);
}

const at::Tensor& Llama::output_weight() const { return p(head_); }

}  // namespace tdpo::models
