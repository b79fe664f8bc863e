// NativeModel: a CausalLM held natively between calls. createModel / loadModel build one on a
// worker thread; forward / save run on workers too, one at a time per model (a mutex), on a
// shared_ptr copy, so dispose() never waits and memory goes when the last call finishes.
#include "binding/model.h"

#include <ATen/ATen.h>

#include <memory>
#include <mutex>

#include "binding/async.h"
#include "binding/convert.h"
#include "binding/errors.h"
#include "models/checkpoint.h"

namespace tdpo::binding {
namespace {

struct ModelState {
  std::mutex mu;
  std::unique_ptr<models::CausalLM> model;
};
using StatePtr = std::shared_ptr<ModelState>;

struct InstanceData {
  Napi::FunctionReference model_class;
};

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
                        InstanceMethod<&NativeModel::Dispose>("dispose"),
                        InstanceMethod<&NativeModel::ParameterCount>("parameterCount")});
  }

  static Napi::Object Wrap(Napi::Env env, StatePtr state) {
    auto* data = env.GetInstanceData<InstanceData>();
    auto ext = Napi::External<StatePtr>::New(env, new StatePtr(std::move(state)),
                                             [](Napi::Env, StatePtr* p) { delete p; });
    return data->model_class.New({ext});
  }

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

  // forward(ids: Int32Array, shape: [B, T], attentionMask?: Int32Array)
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      StatePtr state = live(env);
      const auto& cfg = state->model->config();
      Napi::Object args = Napi::Object::New(env);
      args.Set("inputIds", info[0]);
      args.Set("shape", info[1]);
      const auto shape = shape_field(args, "shape", "forward", 2);
      const int64_t B = shape[0], T = shape[1];
      auto ids = typed_array_field<int32_t>(args, "inputIds", "forward");
      expect_length(ids.length, B * T, "inputIds", "[" + std::to_string(B) + ", " + std::to_string(T) + "]");
      if (T > cfg.max_positions) {
        throw range_error("ERR_TDPO_INPUT", "sequence length " + std::to_string(T) +
                                                " exceeds the model's " + std::to_string(cfg.max_positions) +
                                                " positions");
      }
      for (int64_t i = 0; i < B * T; ++i) {
        if (ids.data[i] < 0 || ids.data[i] >= cfg.vocab_size) {
          throw range_error("ERR_TDPO_INPUT", "inputIds[" + std::to_string(i) + "] = " +
                                                  std::to_string(ids.data[i]) + " is outside the vocabulary [0, " +
                                                  std::to_string(cfg.vocab_size) + ")");
        }
      }
      // Copied into int64 tensors here, so the worker touches no JS memory.
      at::Tensor ids_t = at::from_blob(const_cast<int32_t*>(ids.data), {B, T}, at::kInt).to(at::kLong);
      at::Tensor mask_t;
      if (info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull()) {
        args.Set("attentionMask", info[2]);
        auto mask = typed_array_field<int32_t>(args, "attentionMask", "options");
        expect_length(mask.length, B * T, "options.attentionMask", "[" + std::to_string(B) + ", " + std::to_string(T) + "]");
        for (int64_t i = 0; i < B * T; ++i) {
          if (mask.data[i] != 0 && mask.data[i] != 1)
            throw range_error("ERR_TDPO_INPUT", "options.attentionMask[" + std::to_string(i) + "] must be 0 or 1");
        }
        mask_t = at::from_blob(const_cast<int32_t*>(mask.data), {B, T}, at::kInt).clone();
      }
      auto logits = std::make_shared<at::Tensor>();
      return TaskWorker::Run(
          env, "tdpo:forward",
          [state, ids_t, mask_t, logits] {
            std::lock_guard<std::mutex> lock(state->mu);
            at::NoGradGuard no_grad;
            *logits = state->model->forward(ids_t, mask_t).to(at::kFloat).contiguous();
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
    const double seed = number_option(opt, "seed", 0, "options");
    if (!(seed >= 0 && std::floor(seed) == seed))
      throw range_error("ERR_TDPO_OPTION", "options.seed must be a non-negative integer");
    auto state = std::make_shared<ModelState>();
    return TaskWorker::Run(
        env, "tdpo:createModel",
        [state, config, dtype, seed] {
          state->model = models::make_model(config, dtype);
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
    auto state = std::make_shared<ModelState>();
    return TaskWorker::Run(
        env, "tdpo:loadModel",
        [state, config, sources, dtype] { state->model = models::load_model(config, sources, dtype); },
        [state](Napi::Env env) -> Napi::Value { return NativeModel::Wrap(env, state); });
  });
}

}  // namespace

void InitModel(Napi::Env env, Napi::Object exports) {
  auto* data = new InstanceData();
  data->model_class = Napi::Persistent(NativeModel::Define(env));
  env.SetInstanceData<InstanceData>(data);
  exports.Set("createModel", Napi::Function::New(env, CreateModel, "createModel"));
  exports.Set("loadModel", Napi::Function::New(env, LoadModel, "loadModel"));
}

}  // namespace tdpo::binding
