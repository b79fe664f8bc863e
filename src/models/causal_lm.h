// Decoder-only language models as plain tensors and functional libtorch ops (llm.c style): the
// parameters carry their Hugging Face names, so loading and saving checkpoints is a lookup, and
// autograd sees ordinary tensors when training needs gradients.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tdpo::models {

// The fields of a Hugging Face config.json that the forward pass needs, already validated.
struct ModelConfig {
  std::string model_type;  // "gpt2", "gpt_neox" or "llama" (also Qwen2, Mistral: lib/models/config.ts)
  int64_t vocab_size = 0, max_positions = 0, hidden = 0, layers = 0, heads = 0, intermediate = 0;
  double layer_norm_eps = 1e-5;  // Llama: RMSNorm's epsilon
  // GPT-NeoX and Llama (rotary_pct 1 for Llama).
  double rotary_pct = 1.0, rotary_base = 10000.0;
  // GPT-NeoX only.
  bool parallel_residual = true;
  // Llama only.
  int64_t kv_heads = 0;      // grouped-query attention: heads share kv_heads key/value heads
  int64_t head_dim = 0;      // 0: hidden / heads
  bool tie_embeddings = false;
  bool qkv_bias = false, o_bias = false, mlp_bias = false;
  std::string rope_type = "default";  // "default", "linear" or "llama3"
  double rope_factor = 1.0, rope_low_freq_factor = 1.0, rope_high_freq_factor = 4.0;
  int64_t rope_original_max_positions = 0;  // llama3
  int64_t sliding_window = 0;               // 0: none; else longer sequences are refused
};

// How attention is computed (transformers' attn_implementation): "eager", ATen ops with a
// float32 softmax over the whole [B, H, T, S] score tensor, or "sdpa", libtorch's
// scaled_dot_product_attention (libtorch >= 2.3 only). The same function either way, to float
// rounding, on every query (one with no key to attend to, a left-padding position, is uniform).
enum class AttentionKernel { Eager, Sdpa };
// Whether this build's libtorch has scaled_dot_product_attention with what tdpo needs (2.3 and
// later). The default is the caller's (lib/model.ts: SDPA where available).
bool sdpa_available();
// "eager" or "sdpa"; throws ERR_TDPO_OPTION for anything else, or for "sdpa" without it.
AttentionKernel parse_attention_kernel(const std::string& name);

// Keys and values of every layer for the positions seen so far, so that generation runs each new
// token through the model once instead of re-running the whole sequence.
struct KVCache {
  std::vector<at::Tensor> k, v;  // per layer [B, H, capacity, D]
  int64_t length = 0, capacity = 0;
  explicit KVCache(int64_t capacity_) : capacity(capacity_) {}
};

struct ParamSpec {
  std::string name;  // the canonical name written on save
  std::vector<int64_t> shape;
};

class CausalLM {
 public:
  virtual ~CausalLM() = default;
  const ModelConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return device_; }

  // [B, T] int64 ids, optional [B, T] attention mask (1 = real token, 0 = padding; keys only,
  // positions are 0..T-1 as in the Hugging Face forward) -> [B, T, V] logits in the model's dtype.
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& attention_mask) const {
    return forward(ids, attention_mask, default_positions(ids), nullptr);
  }
  // The general form: `positions` [B, T] (position ids of the new tokens), `attention_mask`
  // [B, past + T] over every key, and a cache that holds `past` positions and receives these.
  // Inputs live on the model's device.
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& attention_mask, const at::Tensor& positions,
                     KVCache* cache) const {
    return at::matmul(hidden(ids, attention_mask, positions, cache), output_weight().t());
  }

  // The final hidden states [B, T, C] (after the last norm): logits = hidden @ output_weight()^T.
  // The fused linear loss takes these instead of the logits.
  at::Tensor hidden(const at::Tensor& ids, const at::Tensor& attention_mask) const {
    return hidden(ids, attention_mask, default_positions(ids), nullptr);
  }
  virtual at::Tensor hidden(const at::Tensor& ids, const at::Tensor& attention_mask, const at::Tensor& positions,
                            KVCache* cache) const = 0;
  // The output projection [V, C] (GPT-2's tied wte, GPT-NeoX's embed_out).
  virtual const at::Tensor& output_weight() const = 0;

  // With gradients enabled and no cache, each block's forward runs without keeping its
  // activations and runs again during the backward pass (recompute.h): activation memory falls to
  // the block inputs plus one block's worth, for about one more forward pass of time.
  void set_gradient_checkpointing(bool on) { checkpointing_ = on; }
  bool gradient_checkpointing() const { return checkpointing_; }

  void set_attention_kernel(AttentionKernel kernel) { attention_kernel_ = kernel; }
  AttentionKernel attention_kernel() const { return attention_kernel_; }

  // Parameters in canonical order, with their canonical names.
  const std::vector<ParamSpec>& specs() const { return specs_; }
  const std::vector<at::Tensor>& params() const { return params_; }
  std::vector<at::Tensor>& params() { return params_; }

 protected:
  CausalLM(ModelConfig config, std::vector<ParamSpec> specs, at::ScalarType dtype, at::Device device)
      : config_(std::move(config)), specs_(std::move(specs)), dtype_(dtype), device_(device) {}
  const at::Tensor& p(size_t i) const { return params_[i]; }
  static at::Tensor default_positions(const at::Tensor& ids) {
    const int64_t T = ids.size(1);
    return at::arange(T, ids.options()).expand({ids.size(0), T});
  }
  // Runs one transformer block, `block(x)`, whose parameters are params_[first, first + count):
  // under gradient checkpointing through recompute_in_backward, else directly.
  at::Tensor run_block(const std::function<at::Tensor(const at::Tensor&)>& block, const at::Tensor& x,
                       size_t first, size_t count, const KVCache* cache) const;

  ModelConfig config_;
  std::vector<ParamSpec> specs_;
  std::vector<at::Tensor> params_;
  at::ScalarType dtype_;
  at::Device device_;
  bool checkpointing_ = false;
  AttentionKernel attention_kernel_ = AttentionKernel::Eager;
};

// Throws ERR_TDPO_CONFIG for an unknown model_type or inconsistent sizes.
void validate_config(const ModelConfig& config);
std::vector<ParamSpec> param_specs(const ModelConfig& config);

// A model with uninitialised parameters of the right shapes on `device`; fill them with
// init_weights() or by loading a checkpoint.
std::unique_ptr<CausalLM> make_model(const ModelConfig& config, at::ScalarType dtype,
                                     at::Device device = at::kCPU);
// The Hugging Face initialisation: N(0, 0.02) weights (GPT-2's residual projections scaled by
// 1/sqrt(2 n_layer)), zero biases, unit layer-norm weights; deterministic in seed.
void init_weights(CausalLM& model, uint64_t seed);

// Maps a checkpoint tensor name to the canonical one, "" when the tensor is to be ignored (mask
// buffers, tied lm_head), or nullopt-like "?" when the architecture has no such tensor.
std::string canonical_name(const ModelConfig& config, const std::string& checkpoint_name);

}  // namespace tdpo::models
