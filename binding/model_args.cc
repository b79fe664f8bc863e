#include "binding/model_args.h"

#include <algorithm>
#include <cmath>

#include "binding/convert.h"
#include "runtime/runtime.h"

namespace tdpo::binding {

models::ModelConfig parse_config(Napi::Value v) {
  Napi::Object o = object_arg(v, "config");
  models::ModelConfig c;
  c.model_type = string_field(o, "modelType", "config");
  c.vocab_size = int_field(o, "vocabSize", "config", 0);
  c.max_positions = int_field(o, "maxPositions", "config", 0);
  c.hidden = int_field(o, "hidden", "config", 0);
  c.layers = int_field(o, "layers", "config", 0);
  c.heads = int_field(o, "heads", "config", 0);
  c.intermediate = int_field(o, "intermediate", "config", 0);
  c.layer_norm_eps = number_field(o, "layerNormEps", "config");
  if (c.model_type == "gpt_neox") {
    c.rotary_pct = number_field(o, "rotaryPct", "config");
    c.rotary_base = number_field(o, "rotaryBase", "config");
    c.parallel_residual = bool_field(o, "parallelResidual", "config");
  }
  if (c.model_type == "llama") {
    c.rotary_base = number_field(o, "rotaryBase", "config");
    c.kv_heads = int_field(o, "kvHeads", "config", 0);
    c.head_dim = int_field(o, "headDim", "config", 0);
    c.tie_embeddings = bool_field(o, "tieEmbeddings", "config");
    c.qkv_bias = bool_field(o, "qkvBias", "config");
    c.o_bias = bool_field(o, "oBias", "config");
    c.mlp_bias = bool_field(o, "mlpBias", "config");
    c.rope_type = string_field(o, "ropeType", "config");
    c.rope_factor = number_field(o, "ropeFactor", "config");
    c.rope_low_freq_factor = number_field(o, "ropeLowFreqFactor", "config");
    c.rope_high_freq_factor = number_field(o, "ropeHighFreqFactor", "config");
    c.rope_original_max_positions = int_field(o, "ropeOriginalMaxPositions", "config", 0);
    c.sliding_window = int_field(o, "slidingWindow", "config", 0);
  }
  models::validate_config(c);
  return c;
}

std::vector<io::TensorSource> parse_sources(Napi::Value v) {
  if (!v.IsArray()) throw type_error("ERR_TDPO_TYPE", "tensors must be an array");
  auto arr = v.As<Napi::Array>();
  std::vector<io::TensorSource> out;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    const std::string path = "tensors[" + std::to_string(i) + "]";
    Napi::Object o = object_arg(arr.Get(i), path);
    io::TensorSource s;
    s.name = string_field(o, "name", path);
    s.file = string_field(o, "file", path);
    s.dtype = string_field(o, "dtype", path);
    s.offset = int_field(o, "offset", path, 0);
    s.bytes = int_field(o, "bytes", path, 0);
    Napi::Value shape = o.Get("shape");
    if (!shape.IsArray()) throw type_error("ERR_TDPO_TYPE", path + ".shape must be an array");
    auto sa = shape.As<Napi::Array>();
    for (uint32_t k = 0; k < sa.Length(); ++k) {
      Napi::Value d = sa.Get(k);
      const double x = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : NAN;
      if (!(std::floor(x) == x && x >= 0 && x < 9007199254740992.0))
        throw type_error("ERR_TDPO_CHECKPOINT", path + ".shape[" + std::to_string(k) + "] must be a non-negative integer");
      s.shape.push_back(static_cast<int64_t>(x));
    }
    out.push_back(std::move(s));
  }
  return out;
}

// 'cpu', or 'cuda' / 'cuda:N' when this libtorch was built with CUDA and sees that GPU.
at::Device parse_model_device(Napi::Object options) {
  const std::string d = string_field(options, "device", "options");
  if (d == "cpu") return at::kCPU;
  int index = 0;
  if (d != "cuda") {
    // Digits only: at::Device's own parser aborts on some malformed strings in libtorch 1.13.
    const bool numbered = d.size() > 5 && d.size() <= 8 && d.compare(0, 5, "cuda:") == 0 &&
                          std::all_of(d.begin() + 5, d.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!numbered) throw range_error("ERR_TDPO_OPTION", "options.device must be 'cpu', 'cuda' or 'cuda:N', got '" + d + "'");
    index = std::stoi(d.substr(5));
  }
  if (!runtime::cuda_available()) {
    throw range_error("ERR_TDPO_OPTION", "options.device '" + d + "': this libtorch (" + runtime::torch_version() +
                                             ") has no CUDA device; rebuild against a CUDA libtorch (TDPO_TORCH_DIR) on a "
                                             "machine with a GPU, or use 'cpu'");
  }
  if (index >= runtime::cuda_device_count()) {
    throw range_error("ERR_TDPO_OPTION", "options.device '" + d + "': this machine has " +
                                             std::to_string(runtime::cuda_device_count()) + " CUDA device(s)");
  }
  return at::Device(at::kCUDA, static_cast<at::DeviceIndex>(index));
}

at::ScalarType parse_model_dtype(Napi::Object options) {
  const std::string d = string_field(options, "dtype", "options");
  if (d == "float32") return at::kFloat;
  if (d == "bfloat16") return at::kBFloat16;
  throw range_error("ERR_TDPO_OPTION", "options.dtype must be 'float32' or 'bfloat16', got '" + d + "'");
}

models::AttentionKernel parse_attention_kernel(Napi::Object options) {
  return models::parse_attention_kernel(string_field(options, "attnImplementation", "options"));
}

namespace {
at::Tensor as_long(const ArrayView<int32_t>& view, int64_t B, int64_t T) {
  return at::from_blob(const_cast<int32_t*>(view.data), {B, T}, at::kInt).to(at::kLong);
}
}  // namespace

Batch parse_batch(const models::ModelConfig& cfg, Napi::Value ids_v, Napi::Value shape_v, Napi::Value mask_v,
                  Napi::Value labels_v, const std::string& name) {
  const auto shape = shape_value(shape_v, name + ".shape", 2);
  const int64_t B = shape[0], T = shape[1];
  const bool has_mask = !mask_v.IsUndefined() && !mask_v.IsNull();
  const bool has_labels = !labels_v.IsUndefined();
  // Pointers only now, after the last read that could run JS; copied before returning.
  auto ids = typed_array_view<int32_t>(ids_v, name + ".inputIds");
  expect_length(ids.length, B * T, name + ".inputIds", shape_text(shape));
  ArrayView<int32_t> mask, labels;
  if (has_mask) {
    mask = typed_array_view<int32_t>(mask_v, name + ".attentionMask");
    expect_length(mask.length, B * T, name + ".attentionMask", shape_text(shape));
  }
  if (has_labels) {
    labels = typed_array_view<int32_t>(labels_v, name + ".labels");
    expect_length(labels.length, B * T, name + ".labels", shape_text(shape));
  }
  models::validate_batch(ids.data, has_mask ? mask.data : nullptr, has_labels ? labels.data : nullptr, B, T, cfg, name);
  Batch b;
  b.ids = as_long(ids, B, T);
  if (has_mask) b.mask = as_long(mask, B, T);
  if (has_labels) b.labels = as_long(labels, B, T);
  return b;
}

models::SamplingOptions parse_sampling(Napi::Value v, const models::ModelConfig& cfg) {
  Napi::Object opt = object_arg(v, "options");
  models::SamplingOptions o;
  o.max_new_tokens = int_field(opt, "maxNewTokens", "options", 1);
  o.top_k = int_field(opt, "topK", "options", 0);
  o.seed = static_cast<uint64_t>(int_field(opt, "seed", "options", 0));
  // A token id, or a list of them (transformers' eos_token_id, e.g. generation_config.json's).
  Napi::Value eos = opt.Get("eosTokenId");
  if (eos.IsArray()) {
    Napi::Array ids = eos.As<Napi::Array>();
    if (ids.Length() > 1024) throw range_error("ERR_TDPO_OPTION", "options.eosTokenId: at most 1024 ids");
    for (uint32_t i = 0; i < ids.Length(); ++i) {
      Napi::Value x = ids.Get(i);
      const double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : NAN;
      if (!(d >= 0 && d < 9007199254740992.0 && std::floor(d) == d)) {
        throw range_error("ERR_TDPO_OPTION", "options.eosTokenId[" + std::to_string(i) + "] must be an integer >= 0, got " + describe(x));
      }
      o.eos_token_ids.push_back(static_cast<int64_t>(d));
    }
  } else if (!eos.IsUndefined() && !eos.IsNull()) {
    o.eos_token_ids.push_back(int_field(opt, "eosTokenId", "options", 0));
  }
  o.temperature = number_field(opt, "temperature", "options");
  o.top_p = number_field(opt, "topP", "options");
  o.use_cache = bool_field(opt, "useCache", "options");
  models::validate(o, cfg);
  return o;
}

std::vector<std::vector<int32_t>> parse_prompts(Napi::Value pv, const models::SamplingOptions& o,
                                                const models::ModelConfig& cfg) {
  if (!pv.IsArray()) throw type_error("ERR_TDPO_TYPE", "generate(prompts): prompts must be a non-empty array of Int32Array");
  Napi::Array parr = pv.As<Napi::Array>();
  std::vector<std::vector<int32_t>> prompts;
  for (uint32_t i = 0; i < parr.Length(); ++i) {
    // Each prompt is copied before the next element is read (an element getter could detach it).
    auto view = typed_array_view<int32_t>(parr.Get(i), "prompts[" + std::to_string(i) + "]");
    prompts.emplace_back(view.data, view.data + view.length);
  }
  models::validate_prompts(prompts, o, cfg);
  return prompts;
}

}  // namespace tdpo::binding
