// NativeTrainer: the native train step (src/train) bound to a policy NativeModel. Each call runs on
// a worker and holds the policy's mutex, so forward / generate calls on the same model interleave
// safely with training.
#include "binding/trainer.h"

#include <torch/torch.h>

#include <cmath>

#include "binding/async.h"
#include "binding/convert.h"
#include "binding/dist.h"
#include "binding/model.h"
#include "binding/model_args.h"
#include "models/causal_lm.h"
#include "train/train_step.h"

namespace tdpo::binding {
namespace {

struct TrainerState {
  StatePtr policy;
  std::unique_ptr<train::TrainStep> step;
};
using TrainerPtr = std::shared_ptr<TrainerState>;


Napi::Object stats_to_js(Napi::Env env, const train::MicroStats& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("loss", s.loss);
  o.Set("tokens", double(s.tokens));
  o.Set("chosenRewards", typed_copy<float>(env, s.chosen_rewards));
  o.Set("rejectedRewards", typed_copy<float>(env, s.rejected_rewards));
  o.Set("chosenKl", typed_copy<float>(env, s.chosen_kl));
  o.Set("rejectedKl", typed_copy<float>(env, s.rejected_kl));
  o.Set("chosenLogps", typed_copy<float>(env, s.chosen_logps));
  o.Set("rejectedLogps", typed_copy<float>(env, s.rejected_logps));
  o.Set("chosenEntropy", typed_copy<float>(env, s.chosen_entropy));
  o.Set("rejectedEntropy", typed_copy<float>(env, s.rejected_entropy));
  return o;
}

// (batch: { inputIds, labels, attentionMask?, shape: [B, T] }) -> int64 tensors.
train::MicroBatch parse_train_batch(Napi::Value v, const models::ModelConfig& cfg) {
  Napi::Object o = object_arg(v, "batch");
  // Every property first (a getter could detach an array whose pointer was already taken).
  const Napi::Value ids = o.Get("inputIds"), shape = o.Get("shape"), mask = o.Get("attentionMask"), labels = o.Get("labels");
  if (labels.IsUndefined()) throw type_error("ERR_TDPO_TYPE", "batch.labels must be an Int32Array");
  Batch b = parse_batch(cfg, ids, shape, mask, labels, "batch");
  train::MicroBatch out;
  out.ids = b.ids;
  out.labels = b.labels;
  out.attention_mask = b.mask;
  return out;
}

class NativeTrainer : public Napi::ObjectWrap<NativeTrainer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeTrainer",
                       {InstanceMethod<&NativeTrainer::Accumulate>("accumulate"),
                        InstanceMethod<&NativeTrainer::Evaluate>("evaluate"),
                        InstanceMethod<&NativeTrainer::Apply>("apply"),
                        InstanceMethod<&NativeTrainer::SaveOptimizer>("saveOptimizer"),
                        InstanceMethod<&NativeTrainer::LoadOptimizer>("loadOptimizer"),
                        InstanceMethod<&NativeTrainer::SetProcessGroup>("setProcessGroup")});
  }
  explicit NativeTrainer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTrainer>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "NativeTrainer is created by createTrainer");
    state_ = *info[0].As<Napi::External<TrainerPtr>>().Data();
  }
  static Napi::Object Wrap(Napi::Env env, TrainerPtr state) {
    auto ext = Napi::External<TrainerPtr>::New(env, new TrainerPtr(std::move(state)),
                                               [](Napi::Env, TrainerPtr* p) { delete p; });
    return env.GetInstanceData<InstanceData>()->trainer_class.New({ext});
  }

 private:
  Napi::Value RunBatch(const Napi::CallbackInfo& info, bool backward) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      TrainerPtr t = state_;
      train::MicroBatch batch = parse_train_batch(info[0], t->policy->model->config());
      const double scale = backward ? number_field(object_arg(info[1], "options"), "scale", "options") : 1.0;
      auto stats = std::make_shared<train::MicroStats>();
      return TaskWorker::Run(
          env, backward ? "tdpo:accumulate" : "tdpo:evaluate",
          [t, batch, backward, scale, stats] {
            std::lock_guard<std::mutex> lock(t->policy->mu);
            *stats = backward ? t->step->accumulate(batch, scale) : t->step->evaluate(batch);
          },
          [stats](Napi::Env env) -> Napi::Value { return stats_to_js(env, *stats); });
    });
  }
  Napi::Value Accumulate(const Napi::CallbackInfo& info) { return RunBatch(info, true); }
  Napi::Value Evaluate(const Napi::CallbackInfo& info) { return RunBatch(info, false); }

  // apply(lr, maxGradNorm) -> grad norm before clipping
  Napi::Value Apply(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      TrainerPtr t = state_;
      const double lr = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : NAN;
      const double clip = info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : NAN;
      auto norm = std::make_shared<double>(0);
      return TaskWorker::Run(
          env, "tdpo:apply",
          [t, lr, clip, norm] {
            std::lock_guard<std::mutex> lock(t->policy->mu);
            *norm = t->step->apply(lr, clip);
          },
          [norm](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *norm); });
    });
  }

  Napi::Value FileCall(const Napi::CallbackInfo& info, bool save) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      TrainerPtr t = state_;
      if (!info[0].IsString()) throw type_error("ERR_TDPO_TYPE", "path must be a string");
      const std::string path = info[0].As<Napi::String>().Utf8Value();
      return TaskWorker::Run(
          env, "tdpo:optimizerState",
          [t, path, save] {
            std::lock_guard<std::mutex> lock(t->policy->mu);
            if (save) {
              t->step->save_optimizer(path);
            } else {
              t->step->load_optimizer(path);
            }
          },
          [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
    });
  }
  // setProcessGroup(group | null): apply() sums the gradients over the group's ranks first.
  Napi::Value SetProcessGroup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      std::shared_ptr<dist::Group> g = info[0].IsNull() || info[0].IsUndefined() ? nullptr : unwrap_group(info[0], "group");
      std::lock_guard<std::mutex> lock(state_->policy->mu);
      state_->step->set_group(std::move(g));
      return env.Undefined();
    });
  }
  Napi::Value SaveOptimizer(const Napi::CallbackInfo& info) { return FileCall(info, true); }
  Napi::Value LoadOptimizer(const Napi::CallbackInfo& info) { return FileCall(info, false); }

  TrainerPtr state_;
};

// createTrainer(policy, reference | null, options) -> Promise<NativeTrainer>; without a
// reference, a preference objective gets a frozen copy of the policy as it is now.
Napi::Value CreateTrainer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promise_call(env, [&]() -> Napi::Value {
    StatePtr policy = unwrap_model(info[0], "policy");
    StatePtr reference = info[1].IsNull() || info[1].IsUndefined() ? nullptr : unwrap_model(info[1], "reference");
    Napi::Object opt = object_arg(info[2], "options");
    train::StepOptions o;
    o.objective = loss::parse_objective(string_field(opt, "loss", "options"), "options.loss", /*allow_sft=*/true);
    o.beta = number_field(opt, "beta", "options");
    o.alpha = number_field(opt, "alpha", "options");
    o.optimizer = string_field(opt, "optimizer", "options");
    o.weight_decay = number_field(opt, "weightDecay", "options");
    o.fused_linear = bool_field(opt, "fusedLinear", "options");
    o.gradient_checkpointing = bool_field(opt, "gradientCheckpointing", "options");
    // Fractions are allowed (tests cut chunks of a few rows); whole bytes, at least one.
    const double chunk_mb = number_field(opt, "chunkMb", "options");
    if (!(chunk_mb * 1048576.0 >= 1 && chunk_mb <= 1073741824.0))
      throw range_error("ERR_TDPO_OPTION", "options.chunkMb must be a number in [2^-20, 2^30] (MB), or null for the device's default (TrainStep.create), got " + js_number(chunk_mb));
    o.chunk_bytes = int64_t(std::llround(chunk_mb * 1048576.0));
    train::validate(o);
    if (reference && reference->model->config().vocab_size != policy->model->config().vocab_size)
      throw range_error("ERR_TDPO_OPTION", "the reference model's vocabulary differs from the policy's");
    auto out = std::make_shared<TrainerState>();
    out->policy = policy;
    return TaskWorker::Run(
        env, "tdpo:createTrainer",
        [out, policy, reference, o] {
          std::lock_guard<std::mutex> lock(policy->mu);
          std::shared_ptr<models::CausalLM> ref;
          if (reference) {
            ref = reference->model;
          } else if (o.objective != train::Objective::Sft) {
            // A frozen copy of the starting policy.
            auto copy = models::make_model(policy->model->config(), policy->model->dtype(), policy->model->device());
            at::NoGradGuard no_grad;
            for (size_t i = 0; i < copy->params().size(); ++i) copy->params()[i].copy_(policy->model->params()[i]);
            copy->set_attention_kernel(policy->model->attention_kernel());
            ref = std::move(copy);
          }
          out->step = std::make_unique<train::TrainStep>(policy->model, ref, o);
        },
        [out](Napi::Env env) -> Napi::Value { return NativeTrainer::Wrap(env, out); });
  });
}

}  // namespace

void InitTrainer(Napi::Env env, Napi::Object exports) {
  // InitModel created the instance data.
  env.GetInstanceData<InstanceData>()->trainer_class = Napi::Persistent(NativeTrainer::Define(env));
  exports.Set("createTrainer", Napi::Function::New(env, CreateTrainer, "createTrainer"));
}

}  // namespace tdpo::binding
