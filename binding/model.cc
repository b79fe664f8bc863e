// NativeModel: a CausalLM held natively between calls. createModel / loadModel build one on a
// worker thread; forward / save run on workers too, one at a time per model (a mutex), on a
// shared_ptr copy, so dispose() never waits and memory goes when the last call finishes.
#include "binding/model.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <memory>
#include <mutex>

#include "binding/async.h"
#include "binding/convert.h"
#include "binding/errors.h"
#include "models/checkpoint.h"
#include "models/generate.h"
#include "runtime/runtime.h"

namespace tdpo::binding {
namespace {

int64_t int_field(Napi::Object o, const char* key, const std::string& path) {
  Napi::Value v = o.Get(key);
  const double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(std::floor(x) == x && x >= 0 && x < 9007199254740992.0))
    throw type_error("ERR_TDPO_CONFIG", path + "." + key + " must be a non-negative integer");
  return static_cast<int64_t>(x);
}

models::ModelConfig parse_config(Napi::Value v) {
  Napi::Object o = object_arg(v, "config");
  models::ModelConfig c;
  c.model_type = string_option(o, "modelType", "", "config");
  c.vocab_size = int_field(o, "vocabSize", "config");
  c.max_positions = int_field(o, "maxPositions", "config");
  c.hidden = int_field(o, "hidden", "config");
  c.layers = int_field(o, "layers", "config");
  c.heads = int_field(o, "heads", "config");
  c.intermediate = int_field(o, "intermediate", "config");
  c.layer_norm_eps = number_option(o, "layerNormEps", 1e-5, "config");
  c.rotary_pct = number_option(o, "rotaryPct", 1.0, "config");
  c.rotary_base = number_option(o, "rotaryBase", 10000.0, "config");
  c.parallel_residual = bool_option(o, "parallelResidual", true, "config");
  models::validate_config(c);
  return c;
}

// 'cpu', or 'cuda' when this libtorch was built with CUDA and sees a GPU.
at::Device parse_model_device(Napi::Object options) {
  const std::string d = string_option(options, "device", "cpu", "options");
  if (d == "cpu") return at::kCPU;
  if (d != "cuda") throw range_error("ERR_TDPO_OPTION", "options.device must be 'cpu' or 'cuda', got '" + d + "'");
  if (!runtime::cuda_available()) {
    throw range_error("ERR_TDPO_OPTION", "options.device 'cuda': this libtorch (" + runtime::torch_version() +
                                             ") has no CUDA device; rebuild against a CUDA libtorch (TDPO_TORCH_DIR) on a "
                                             "machine with a GPU, or use 'cpu'");
  }
  return at::kCUDA;
}

at::ScalarType parse_model_dtype(Napi::Object options) {
  const std::string d = string_option(options, "dtype", "float32", "options");
  if (d == "float32") return at::kFloat;
  if (d == "bfloat16") return at::kBFloat16;
  throw range_error("ERR_TDPO_OPTION", "options.dtype must be 'float32' or 'bfloat16', got '" + d + "'");
}

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod<&NativeModel::Forward>("forward"),
                        InstanceMethod<&NativeModel::Save>("save"),
                        InstanceMethod<&NativeModel::Generate>("generate"),
                        InstanceMethod<&NativeModel::SequenceLogprobs>("sequenceLogprobs"),
                        InstanceMethod<&NativeModel::Dispose>("dispose"),
                        InstanceMethod<&NativeModel::ParameterCount>("parameterCount")});
  }

  static Napi::Object Wrap(Napi::Env env, StatePtr state) {
    auto* data = env.GetInstanceData<InstanceData>();
    auto ext = Napi::External<StatePtr>::New(env, new StatePtr(std::move(state)),
                                             [](Napi::Env, StatePtr* p) { delete p; });
    return data->model_class.New({ext});
  }

  StatePtr state() const { return state_; }

  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      throw Napi::TypeError::New(info.Env(), "NativeModel is created by createModel / loadModel");
    }
    state_ = *info[0].As<Napi::External<StatePtr>>().Data();
  }

 private:
  StatePtr live(Napi::Env env) {
    if (!state_) {
      throw to_js(env, {ErrorKind::Generic, "ERR_TDPO_DISPOSED", "this model was disposed"});
    }
    return state_;
  }

  struct Batch {
    at::Tensor ids, mask;  // int64 [B, T]; mask undefined when not given
  };

  // (ids: Int32Array, shape: [B, T], attentionMask?: Int32Array), validated against the model and
  // copied into int64 tensors here, so the worker touches no JS memory.
  static Batch parse_batch(Napi::Env env, const models::ModelConfig& cfg, Napi::Value ids_v, Napi::Value shape_v,
                           Napi::Value mask_v) {
    Napi::Object args = Napi::Object::New(env);
    args.Set("inputIds", ids_v);
    args.Set("shape", shape_v);
    const auto shape = shape_field(args, "shape", "model", 2);
    const int64_t B = shape[0], T = shape[1];
    const std::string shape_text = "[" + std::to_string(B) + ", " + std::to_string(T) + "]";
    auto ids = typed_array_field<int32_t>(args, "inputIds", "model");
    expect_length(ids.length, B * T, "inputIds", shape_text);
    if (T > cfg.max_positions) {
      throw range_error("ERR_TDPO_INPUT", "sequence length " + std::to_string(T) + " exceeds the model's " +
                                              std::to_string(cfg.max_positions) + " positions");
    }
    for (int64_t i = 0; i < B * T; ++i) {
      if (ids.data[i] < 0 || ids.data[i] >= cfg.vocab_size) {
        throw range_error("ERR_TDPO_INPUT", "inputIds[" + std::to_string(i) + "] = " + std::to_string(ids.data[i]) +
                                                " is outside the vocabulary [0, " + std::to_string(cfg.vocab_size) + ")");
      }
    }
    Batch batch;
    batch.ids = at::from_blob(const_cast<int32_t*>(ids.data), {B, T}, at::kInt).to(at::kLong);
    if (!mask_v.IsUndefined() && !mask_v.IsNull()) {
      args.Set("attentionMask", mask_v);
      auto mask = typed_array_field<int32_t>(args, "attentionMask", "options");
      expect_length(mask.length, B * T, "options.attentionMask", shape_text);
      for (int64_t i = 0; i < B * T; ++i) {
        if (mask.data[i] != 0 && mask.data[i] != 1)
          throw range_error("ERR_TDPO_INPUT", "options.attentionMask[" + std::to_string(i) + "] must be 0 or 1");
      }
      batch.mask = at::from_blob(const_cast<int32_t*>(mask.data), {B, T}, at::kInt).to(at::kLong);
    }
    return batch;
  }

  static Napi::Value arg(const Napi::CallbackInfo& info, size_t i) {
    return i < info.Length() ? info[i] : info.Env().Undefined();
  }

  // forward(ids, shape, attentionMask?) -> { logits: Float32Array [B, T, V], shape }
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      StatePtr state = live(env);
      Batch batch = parse_batch(env, state->model->config(), arg(info, 0), arg(info, 1), arg(info, 2));
      auto logits = std::make_shared<at::Tensor>();
      return TaskWorker::Run(
          env, "tdpo:forward",
          [state, batch, logits] {
            std::lock_guard<std::mutex> lock(state->mu);
            at::NoGradGuard no_grad;
            const at::Device dev = state->model->device();
            *logits = state->model->forward(batch.ids.to(dev), batch.mask.defined() ? batch.mask.to(dev) : batch.mask)
                          .to(at::kFloat)
                          .contiguous();
          },
          [logits](Napi::Env env) -> Napi::Value {
            Napi::Object out = Napi::Object::New(env);
            Napi::Array shape = Napi::Array::New(env, 3);
            for (uint32_t i = 0; i < 3; ++i) shape.Set(i, Napi::Number::New(env, double(logits->size(i))));
            out.Set("logits", tensor_to_typed_array(env, *logits));
            out.Set("shape", shape);
            return out;
          });
    });
  }

  // sequenceLogprobs(ids, shape, labels: Int32Array, attentionMask?) -> { tokenLogprobs, sums }
  Napi::Value SequenceLogprobs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      StatePtr state = live(env);
      const auto& cfg = state->model->config();
      Batch batch = parse_batch(env, cfg, arg(info, 0), arg(info, 1), arg(info, 3));
      Napi::Object args = Napi::Object::New(env);
      args.Set("labels", arg(info, 2));
      auto labels = typed_array_field<int32_t>(args, "labels", "sequenceLogprobs");
      const int64_t B = batch.ids.size(0), T = batch.ids.size(1);
      expect_length(labels.length, B * T, "labels", "[" + std::to_string(B) + ", " + std::to_string(T) + "]");
      for (int64_t i = 0; i < B * T; ++i) {
        const int32_t y = labels.data[i];
        if (y != -100 && (y < 0 || y >= cfg.vocab_size)) {
          throw range_error("ERR_TDPO_LABEL", "labels[" + std::to_string(i) + "] is " + std::to_string(y) +
                                                  ": labels must be in [0, " + std::to_string(cfg.vocab_size) + ") or -100");
        }
      }
      at::Tensor labels_t = at::from_blob(const_cast<int32_t*>(labels.data), {B, T}, at::kInt).to(at::kLong);
      auto result = std::make_shared<models::SequenceLogprobs>();
      return TaskWorker::Run(
          env, "tdpo:sequenceLogprobs",
          [state, batch, labels_t, result] {
            std::lock_guard<std::mutex> lock(state->mu);
            const at::Device dev = state->model->device();
            *result = models::sequence_logprobs(*state->model, batch.ids.to(dev), labels_t.to(dev),
                                                batch.mask.defined() ? batch.mask.to(dev) : batch.mask);
          },
          [result](Napi::Env env) -> Napi::Value {
            Napi::Object out = Napi::Object::New(env);
            out.Set("tokenLogprobs", tensor_to_typed_array(env, result->token_logprobs));
            out.Set("sums", tensor_to_typed_array(env, result->sums));
            return out;
          });
    });
  }

  // generate(prompts: Int32Array[], options) -> Int32Array[]
  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      StatePtr state = live(env);
      const auto& cfg = state->model->config();
      Napi::Value pv = arg(info, 0);
      if (!pv.IsArray() || pv.As<Napi::Array>().Length() == 0)
        throw type_error("ERR_TDPO_TYPE", "generate(prompts): prompts must be a non-empty array of Int32Array");
      Napi::Array parr = pv.As<Napi::Array>();
      Napi::Object opt = object_arg(arg(info, 1), "options", true);
      models::SamplingOptions o;
      auto int_opt = [&](const char* key, int64_t fallback, int64_t lo) {
        const double x = number_option(opt, key, double(fallback), "options");
        if (!(std::floor(x) == x && x >= double(lo) && x < 9007199254740992.0))
          throw range_error("ERR_TDPO_OPTION", std::string("options.") + key + " must be an integer >= " + std::to_string(lo));
        return static_cast<int64_t>(x);
      };
      o.max_new_tokens = int_opt("maxNewTokens", 32, 1);
      o.top_k = int_opt("topK", 0, 0);
      o.seed = static_cast<uint64_t>(int_opt("seed", 0, 0));
      o.eos_token_id = opt.Get("eosTokenId").IsUndefined() || opt.Get("eosTokenId").IsNull() ? -1 : int_opt("eosTokenId", -1, 0);
      o.temperature = number_option(opt, "temperature", 1.0, "options");
      if (!(o.temperature >= 0 && std::isfinite(o.temperature)))
        throw range_error("ERR_TDPO_OPTION", "options.temperature must be a finite number >= 0");
      o.top_p = number_option(opt, "topP", 1.0, "options");
      if (!(o.top_p > 0 && o.top_p <= 1)) throw range_error("ERR_TDPO_OPTION", "options.topP must be in (0, 1]");
      o.use_cache = bool_option(opt, "useCache", true, "options");
      std::vector<std::vector<int32_t>> prompts;
      for (uint32_t i = 0; i < parr.Length(); ++i) {
        Napi::Object holder = Napi::Object::New(env);
        holder.Set("p", parr.Get(i));
        auto view = typed_array_field<int32_t>(holder, "p", "prompts[" + std::to_string(i) + "]");
        const std::string name = "prompts[" + std::to_string(i) + "]";
        if (view.length == 0) throw range_error("ERR_TDPO_INPUT", name + " is empty");
        if (int64_t(view.length) + o.max_new_tokens > cfg.max_positions) {
          throw range_error("ERR_TDPO_INPUT", name + " has " + std::to_string(view.length) + " tokens; with maxNewTokens " +
                                                  std::to_string(o.max_new_tokens) + " that exceeds the model's " +
                                                  std::to_string(cfg.max_positions) + " positions");
        }
        for (size_t t = 0; t < view.length; ++t) {
          if (view.data[t] < 0 || view.data[t] >= cfg.vocab_size)
            throw range_error("ERR_TDPO_INPUT", name + "[" + std::to_string(t) + "] = " + std::to_string(view.data[t]) +
                                                    " is outside the vocabulary");
        }
        prompts.emplace_back(view.data, view.data + view.length);
      }
      auto result = std::make_shared<std::vector<std::vector<int32_t>>>();
      return TaskWorker::Run(
          env, "tdpo:generate",
          [state, prompts, o, result] {
            std::lock_guard<std::mutex> lock(state->mu);
            *result = models::generate(*state->model, prompts, o);
          },
          [result](Napi::Env env) -> Napi::Value {
            Napi::Array out = Napi::Array::New(env, result->size());
            for (uint32_t i = 0; i < result->size(); ++i) {
              const auto& row = (*result)[i];
              auto arr = Napi::Int32Array::New(env, row.size());
              std::copy(row.begin(), row.end(), arr.Data());
              out.Set(i, arr);
            }
            return out;
          });
    });
  }

  // save(path): model.safetensors at path.
  Napi::Value Save(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      StatePtr state = live(env);
      if (!info[0].IsString()) throw type_error("ERR_TDPO_TYPE", "save(path): path must be a string");
      std::string path = info[0].As<Napi::String>().Utf8Value();
      return TaskWorker::Run(
          env, "tdpo:save",
          [state, path] {
            std::lock_guard<std::mutex> lock(state->mu);
            models::save_model(*state->model, path);
          },
          [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
    });
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    state_.reset();
    return info.Env().Undefined();
  }

  Napi::Value ParameterCount(const Napi::CallbackInfo& info) {
    StatePtr state = live(info.Env());
    double n = 0;
    for (const auto& p : state->model->params()) n += double(p.numel());
    return Napi::Number::New(info.Env(), n);
  }

  StatePtr state_;
};

std::vector<io::TensorSource> parse_sources(Napi::Value v) {
  if (!v.IsArray()) throw type_error("ERR_TDPO_TYPE", "tensors must be an array");
  auto arr = v.As<Napi::Array>();
  std::vector<io::TensorSource> out;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    const std::string path = "tensors[" + std::to_string(i) + "]";
    Napi::Object o = object_arg(arr.Get(i), path);
    io::TensorSource s;
    s.name = string_option(o, "name", "", path);
    s.file = string_option(o, "file", "", path);
    s.dtype = string_option(o, "dtype", "", path);
    s.offset = int_field(o, "offset", path);
    s.bytes = int_field(o, "bytes", path);
    Napi::Value shape = o.Get("shape");
    if (!shape.IsArray()) throw type_error("ERR_TDPO_TYPE", path + ".shape must be an array");
    auto sa = shape.As<Napi::Array>();
    for (uint32_t k = 0; k < sa.Length(); ++k) {
      Napi::Object holder = Napi::Object::New(v.Env());
      holder.Set("d", sa.Get(k));
      s.shape.push_back(int_field(holder, "d", path + ".shape"));
    }
    out.push_back(std::move(s));
  }
  return out;
}

Napi::Value CreateModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promise_call(env, [&]() -> Napi::Value {
    auto config = parse_config(info[0]);
    Napi::Object opt = object_arg(info[1], "options", true);
    const at::ScalarType dtype = parse_model_dtype(opt);
    const at::Device device = parse_model_device(opt);
    const double seed = number_option(opt, "seed", 0, "options");
    if (!(seed >= 0 && std::floor(seed) == seed))
      throw range_error("ERR_TDPO_OPTION", "options.seed must be a non-negative integer");
    auto state = std::make_shared<ModelState>();
    return TaskWorker::Run(
        env, "tdpo:createModel",
        [state, config, dtype, device, seed] {
          state->model = models::make_model(config, dtype, device);
          models::init_weights(*state->model, static_cast<uint64_t>(seed));
        },
        [state](Napi::Env env) -> Napi::Value { return NativeModel::Wrap(env, state); });
  });
}

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promise_call(env, [&]() -> Napi::Value {
    auto config = parse_config(info[0]);
    auto sources = parse_sources(info[1]);
    Napi::Object opt = object_arg(info[2], "options", true);
    const at::ScalarType dtype = parse_model_dtype(opt);
    const at::Device device = parse_model_device(opt);
    auto state = std::make_shared<ModelState>();
    return TaskWorker::Run(
        env, "tdpo:loadModel",
        [state, config, sources, dtype, device] { state->model = models::load_model(config, sources, dtype, device); },
        [state](Napi::Env env) -> Napi::Value { return NativeModel::Wrap(env, state); });
  });
}

}  // namespace

StatePtr unwrap_model(Napi::Value value, const std::string& name) {
  auto* data = value.Env().GetInstanceData<InstanceData>();
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(data->model_class.Value())) {
    throw type_error("ERR_TDPO_TYPE", name + " must be a model");
  }
  StatePtr state = NativeModel::Unwrap(value.As<Napi::Object>())->state();
  if (!state) throw Error(ErrorKind::Generic, "ERR_TDPO_DISPOSED", name + " was disposed");
  return state;
}

Napi::Object wrap_model(Napi::Env env, StatePtr state) { return NativeModel::Wrap(env, std::move(state)); }

void InitModel(Napi::Env env, Napi::Object exports) {
  auto* data = new InstanceData();
  data->model_class = Napi::Persistent(NativeModel::Define(env));
  env.SetInstanceData<InstanceData>(data);
  exports.Set("createModel", Napi::Function::New(env, CreateModel, "createModel"));
  exports.Set("loadModel", Napi::Function::New(env, LoadModel, "loadModel"));
}

}  // namespace tdpo::binding
