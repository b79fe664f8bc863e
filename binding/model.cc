// NativeModel: a CausalLM held natively between calls. createModel / loadModel build one on a
// worker thread; every call runs on a worker too, one at a time per model (its mutex), on a
// shared_ptr copy, so dispose() never waits and memory goes when the last call finishes.
// Arguments are read by model_args.cc; their checks live in src/models.
#include "binding/model.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <memory>
#include <mutex>

#include "binding/async.h"
#include "binding/convert.h"
#include "binding/errors.h"
#include "binding/model_args.h"
#include "models/checkpoint.h"
#include "models/generate.h"

namespace tdpo::binding {
namespace {

// Queues `work` on a worker holding the model's mutex; `done` converts its result on the JS thread.
template <typename Result>
Napi::Promise run_locked(Napi::Env env, const char* name, StatePtr state,
                         std::function<Result(models::CausalLM&)> work,
                         std::function<Napi::Value(Napi::Env, Result&)> done) {
  auto result = std::make_shared<Result>();
  return TaskWorker::Run(
      env, name,
      [state, work, result] {
        std::lock_guard<std::mutex> lock(state->mu);
        *result = work(*state->model);
      },
      [done, result](Napi::Env env) { return done(env, *result); });
}

Napi::Value arg(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() ? info[i] : info.Env().Undefined();
}

at::Tensor on(const at::Tensor& t, at::Device device) { return t.defined() ? t.to(device) : t; }

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
    if (!state_) throw to_js(env, {ErrorKind::Generic, "ERR_TDPO_DISPOSED", "this model was disposed"});
    return state_;
  }

  // forward(ids, shape, attentionMask?) -> { logits: Float32Array [B, T, V], shape }
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      StatePtr state = live(env);
      Batch b = parse_batch(state->model->config(), arg(info, 0), arg(info, 1), arg(info, 2), env.Undefined(), "forward");
      return run_locked<at::Tensor>(
          env, "tdpo:forward", state,
          [b](models::CausalLM& m) {
            at::NoGradGuard no_grad;
            return m.forward(b.ids.to(m.device()), on(b.mask, m.device())).to(at::kFloat).contiguous();
          },
          [](Napi::Env env, at::Tensor& logits) -> Napi::Value {
            Napi::Object out = Napi::Object::New(env);
            Napi::Array shape = Napi::Array::New(env, 3);
            for (uint32_t i = 0; i < 3; ++i) shape.Set(i, Napi::Number::New(env, double(logits.size(i))));
            out.Set("logits", tensor_to_typed_array(env, logits));
            out.Set("shape", shape);
            return out;
          });
    });
  }

  // sequenceLogprobs(ids, shape, labels, attentionMask?) -> { tokenLogprobs, sums, tokenEntropies }
  Napi::Value SequenceLogprobs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      StatePtr state = live(env);
      Batch b = parse_batch(state->model->config(), arg(info, 0), arg(info, 1), arg(info, 3), arg(info, 2),
                            "sequenceLogprobs");
      if (!b.labels.defined()) throw type_error("ERR_TDPO_TYPE", "sequenceLogprobs.labels must be an Int32Array");
      return run_locked<models::SequenceLogprobs>(
          env, "tdpo:sequenceLogprobs", state,
          [b](models::CausalLM& m) {
            return models::sequence_logprobs(m, b.ids.to(m.device()), b.labels.to(m.device()), on(b.mask, m.device()));
          },
          [](Napi::Env env, models::SequenceLogprobs& r) -> Napi::Value {
            Napi::Object out = Napi::Object::New(env);
            out.Set("tokenLogprobs", tensor_to_typed_array(env, r.token_logprobs));
            out.Set("sums", tensor_to_typed_array(env, r.sums));
            out.Set("tokenEntropies", tensor_to_typed_array(env, r.token_entropies));
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
      // Options first: their getters run before any prompt is read.
      const models::SamplingOptions o = parse_sampling(arg(info, 1), cfg);
      auto prompts = parse_prompts(arg(info, 0), o, cfg);
      using Rows = std::vector<std::vector<int32_t>>;
      return run_locked<Rows>(
          env, "tdpo:generate", state, [prompts, o](models::CausalLM& m) { return models::generate(m, prompts, o); },
          [](Napi::Env env, Rows& rows) -> Napi::Value {
            Napi::Array out = Napi::Array::New(env, rows.size());
            for (uint32_t i = 0; i < rows.size(); ++i) {
              auto arr = Napi::Int32Array::New(env, rows[i].size());
              std::copy(rows[i].begin(), rows[i].end(), arr.Data());
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
      if (!arg(info, 0).IsString()) throw type_error("ERR_TDPO_TYPE", "save(path): path must be a string");
      const std::string path = info[0].As<Napi::String>().Utf8Value();
      return run_locked<bool>(
          env, "tdpo:save", state,
          [path](models::CausalLM& m) {
            models::save_model(m, path);
            return true;
          },
          [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
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

// Builds a model on a worker and wraps it.
Napi::Value build_model(Napi::Env env, const char* name, std::function<std::unique_ptr<models::CausalLM>()> make) {
  auto state = std::make_shared<ModelState>();
  return TaskWorker::Run(
      env, name, [state, make] { state->model = make(); },
      [state](Napi::Env env) -> Napi::Value { return NativeModel::Wrap(env, state); });
}

// createModel(config, { seed, dtype, device, attnImplementation })
Napi::Value CreateModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promise_call(env, [&]() -> Napi::Value {
    Napi::Object opt = object_arg(arg(info, 1), "options");
    const auto seed = static_cast<uint64_t>(int_field(opt, "seed", "options", 0));
    const at::ScalarType dtype = parse_model_dtype(opt);
    const at::Device device = parse_model_device(opt);
    const models::AttentionKernel kernel = parse_attention_kernel(opt);
    const auto config = parse_config(arg(info, 0));
    return build_model(env, "tdpo:createModel", [config, dtype, device, seed, kernel] {
      auto model = models::make_model(config, dtype, device);
      models::init_weights(*model, seed);
      model->set_attention_kernel(kernel);
      return model;
    });
  });
}

// loadModel(config, tensors, { dtype, device, attnImplementation })
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promise_call(env, [&]() -> Napi::Value {
    Napi::Object opt = object_arg(arg(info, 2), "options");
    const at::ScalarType dtype = parse_model_dtype(opt);
    const at::Device device = parse_model_device(opt);
    const models::AttentionKernel kernel = parse_attention_kernel(opt);
    const auto config = parse_config(arg(info, 0));
    const auto sources = parse_sources(arg(info, 1));
    return build_model(env, "tdpo:loadModel", [config, sources, dtype, device, kernel] {
      auto model = models::load_model(config, sources, dtype, device);
      model->set_attention_kernel(kernel);
      return model;
    });
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
