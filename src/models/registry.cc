// Per-architecture parameter lists, checkpoint-name mapping, initialisation and construction.
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <regex>

#include "common/error.h"
#include "models/causal_lm.h"
#include "models/gpt2.h"
#include "models/gpt_neox.h"

namespace tdpo::models {

void validate_config(const ModelConfig& c) {
  if (c.model_type != "gpt2" && c.model_type != "gpt_neox") {
    throw range_error("ERR_TDPO_CONFIG", "config.model_type '" + c.model_type +
                                             "' is not supported: use 'gpt2' or 'gpt_neox'");
  }
  auto positive = [](int64_t v, const char* field) {
    if (v <= 0) throw range_error("ERR_TDPO_CONFIG", std::string("config.") + field + " must be > 0");
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.max_positions, c.model_type == "gpt2" ? "n_positions" : "max_position_embeddings");
  positive(c.hidden, c.model_type == "gpt2" ? "n_embd" : "hidden_size");
  positive(c.layers, c.model_type == "gpt2" ? "n_layer" : "num_hidden_layers");
  positive(c.heads, c.model_type == "gpt2" ? "n_head" : "num_attention_heads");
  positive(c.intermediate, c.model_type == "gpt2" ? "n_inner" : "intermediate_size");
  if (c.hidden % c.heads != 0) {
    throw range_error("ERR_TDPO_CONFIG", "the hidden size (" + std::to_string(c.hidden) +
                                             ") must be a multiple of the head count (" +
                                             std::to_string(c.heads) + ")");
  }
  if (!(c.layer_norm_eps > 0)) throw range_error("ERR_TDPO_CONFIG", "the layer-norm epsilon must be > 0");
  if (c.model_type == "gpt_neox") {
    if (!(c.rotary_pct > 0 && c.rotary_pct <= 1))
      throw range_error("ERR_TDPO_CONFIG", "config.rotary_pct must be in (0, 1]");
    const int64_t rot = static_cast<int64_t>((c.hidden / c.heads) * c.rotary_pct);
    if (rot < 2 || rot % 2 != 0)
      throw range_error("ERR_TDPO_CONFIG", "config.rotary_pct gives " + std::to_string(rot) +
                                               " rotary dimensions per head; it must be even and >= 2");
    if (!(c.rotary_base > 0)) throw range_error("ERR_TDPO_CONFIG", "config.rotary_emb_base must be > 0");
  }
}

std::vector<ParamSpec> param_specs(const ModelConfig& c) {
  return c.model_type == "gpt2" ? gpt2_param_specs(c) : gpt_neox_param_specs(c);
}

std::unique_ptr<CausalLM> make_model(const ModelConfig& c, at::ScalarType dtype, at::Device device) {
  validate_config(c);
  std::unique_ptr<CausalLM> m;
  if (c.model_type == "gpt2") {
    m = std::make_unique<Gpt2>(c, dtype, device);
  } else {
    m = std::make_unique<GptNeoX>(c, dtype, device);
  }
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  for (const auto& s : m->specs()) m->params().push_back(at::empty(s.shape, options));
  return m;
}

void init_weights(CausalLM& model, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double std = 0.02;
  const double residual_std = std / std::sqrt(2.0 * model.config().layers);
  const bool gpt2 = model.config().model_type == "gpt2";
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < model.specs().size(); ++i) {
    const std::string& name = model.specs()[i].name;
    at::Tensor t = at::empty(model.specs()[i].shape, at::kFloat);
    const bool is_bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    const bool is_norm = name.find("ln_") != std::string::npos || name.find("layernorm") != std::string::npos ||
                         name.find("layer_norm") != std::string::npos;
    if (is_norm && !is_bias) {
      t.fill_(1.0);
    } else if (is_bias) {
      t.zero_();
    } else {
      const bool residual = gpt2 && name.find("c_proj.weight") != std::string::npos;
      t.normal_(0.0, residual ? residual_std : std, gen);
    }
    model.params()[i].copy_(t);
  }
}

std::string canonical_name(const ModelConfig& c, const std::string& n) {
  if (c.model_type == "gpt2") {
    static const std::regex ignored(R"((transformer\.)?h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight)");
    if (std::regex_match(n, ignored)) return "";
    return n.rfind("transformer.", 0) == 0 ? n : "transformer." + n;
  }
  static const std::regex ignored(
      R"(gpt_neox\.layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq))");
  if (std::regex_match(n, ignored)) return "";
  return n;
}

}  // namespace tdpo::models
