// Per-architecture parameter lists, checkpoint-name mapping, initialisation and construction.
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <regex>
#include <sstream>
#include <unistd.h>

#include "common/error.h"
#include "models/causal_lm.h"
#include "models/gpt2.h"
#include "models/gpt_neox.h"
#include "models/llama.h"

namespace tdpo::models {

namespace {
void validate_llama(const ModelConfig& c) {
  auto fail = [](const std::string& m) { throw range_error("ERR_TDPO_CONFIG", m); };
  if (c.kv_heads <= 0 || c.heads % c.kv_heads != 0) {
    fail("config.num_key_value_heads (" + std::to_string(c.kv_heads) + ") must divide num_attention_heads (" +
         std::to_string(c.heads) + ")");
  }
  if (c.head_dim < 0) fail("config.head_dim must be > 0");
  if (c.head_dim == 0 && c.hidden % c.heads != 0) {
    fail("the hidden size (" + std::to_string(c.hidden) + ") must be a multiple of the head count (" +
         std::to_string(c.heads) + ") unless config.head_dim is given");
  }
  const int64_t D = c.head_dim > 0 ? c.head_dim : c.hidden / c.heads;
  if (D % 2 != 0) fail("the head size (" + std::to_string(D) + ") must be even for rotary embeddings");
  if (!(c.layer_norm_eps > 0)) fail("config.rms_norm_eps must be > 0");
  if (!(c.rotary_base > 0)) fail("config.rope_theta must be > 0");
  if (c.rope_type != "default" && c.rope_type != "linear" && c.rope_type != "llama3") {
    fail("rope type '" + c.rope_type + "' is not supported (supported: default, linear, llama3)");
  }
  if (c.rope_type != "default" && !(c.rope_factor > 0)) fail("the rope scaling factor must be > 0");
  if (c.rope_type == "llama3") {
    if (c.rope_original_max_positions <= 0) fail("llama3 rope scaling needs original_max_position_embeddings > 0");
    if (!(c.rope_low_freq_factor > 0 && c.rope_high_freq_factor > c.rope_low_freq_factor)) {
      fail("llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor");
    }
  }
  if (c.sliding_window < 0) fail("config.sliding_window must be >= 0");
}
}  // namespace

void validate_config(const ModelConfig& c) {
  if (c.model_type != "gpt2" && c.model_type != "gpt_neox" && c.model_type != "llama") {
    throw range_error("ERR_TDPO_CONFIG", "config.model_type '" + c.model_type +
                                             "' is not supported: use 'gpt2', 'gpt_neox' or 'llama'");
  }
  auto positive = [](int64_t v, const char* field) {
    if (v <= 0) throw range_error("ERR_TDPO_CONFIG", std::string("config.") + field + " must be > 0");
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.max_positions, c.model_type == "gpt2" ? "n_positions" : "max_position_embeddings");
  positive(c.hidden, c.model_type == "gpt2" ? "n_embd" : "hidden_size");
  positive(c.layers, c.model_type == "gpt2" ? "n_layer" : "num_hidden_layers");
  // Each layer is a dozen tensors named before any is allocated: 2^40 layers would fill memory with
  // names, not fail on size. The deepest published models have ~130 layers.
  if (c.layers > 65536) {
    throw range_error("ERR_TDPO_CONFIG", std::string("config.") + (c.model_type == "gpt2" ? "n_layer" : "num_hidden_layers") +
                                             " must be at most 65536, got " + std::to_string(c.layers));
  }
  positive(c.heads, c.model_type == "gpt2" ? "n_head" : "num_attention_heads");
  positive(c.intermediate, c.model_type == "gpt2" ? "n_inner" : "intermediate_size");
  if (c.model_type == "llama") {
    validate_llama(c);
    return;
  }
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
  if (c.model_type == "llama") return llama_param_specs(c);
  return c.model_type == "gpt2" ? gpt2_param_specs(c) : gpt_neox_param_specs(c);
}

namespace {
// Linux hands out each large tensor lazily, so weights totalling more than the machine's memory
// would all "allocate" and the process be OOM-killed while they are written: refuse them first.
void refuse_beyond_memory(const CausalLM& m, at::ScalarType dtype) {
  double bytes = 0;  // in double: terabyte configs must not wrap
  for (const auto& s : m.specs()) {
    double n = 1;
    for (int64_t d : s.shape) n *= double(d);
    bytes += n * double(c10::elementSize(dtype));
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return;
  const double memory = double(pages) * double(page);
  if (bytes > memory) {
    std::ostringstream msg;
    msg << "the model's weights need " << bytes / 1e9 << " GB, more than this machine's " << memory / 1e9
        << " GB of memory (check the config's sizes)";
    throw range_error("ERR_TDPO_OUT_OF_MEMORY", msg.str());
  }
}
}  // namespace

std::unique_ptr<CausalLM> make_model(const ModelConfig& c, at::ScalarType dtype, at::Device device) {
  validate_config(c);
  std::unique_ptr<CausalLM> m;
  if (c.model_type == "gpt2") {
    m = std::make_unique<Gpt2>(c, dtype, device);
  } else if (c.model_type == "llama") {
    m = std::make_unique<Llama>(c, dtype, device);
  } else {
    m = std::make_unique<GptNeoX>(c, dtype, device);
  }
  if (device.is_cpu()) refuse_beyond_memory(*m, dtype);
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
                         name.find("layer_norm") != std::string::npos || name == "model.norm.weight";
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
  if (c.model_type == "llama") {
    // A tied model's lm_head.weight, where a checkpoint carries one, is embed_tokens (transformers
    // ties it and ignores the stored copy).
    static const std::regex llama_ignored(R"(model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq)");
    if (std::regex_match(n, llama_ignored) || (c.tie_embeddings && n == "lm_head.weight")) return "";
    return n;
  }
  static const std::regex ignored(
      R"(gpt_neox\.layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq))");
  if (std::regex_match(n, ignored)) return "";
  return n;
}

}  // namespace tdpo::models
