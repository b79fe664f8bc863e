// tdpoLossSync / tdpoLoss: read the JS arguments into a LossCall (plain data plus pins on the input
// arrays), run src/loss on this thread or on a worker, and wrap the result. All argument checks
// happen here, before any work is queued, so the async call rejects with the same errors. The
// buffer contract (what is read in place, what is copied) is stated at Logits below and in the
// README's error section.
#include "binding/loss.h"

#include <sstream>

#include "binding/async.h"
#include "binding/convert.h"
#include "binding/errors.h"
#include "loss/tdpo_loss.h"

namespace tdpo::binding {
namespace {

// How an async call reads a logits array. The kernel must never see memory that JS can free or
// shrink while it runs, and JS can do that to any ordinary ArrayBuffer (transfer it through
// postMessage / structuredClone, resize a resizable one); Node-API has no way to forbid either.
//   InPlace   the sync call (no JS runs until it returns), a SharedArrayBuffer (cannot be detached
//             or shrunk), or memory tdpo itself handed out (model logits, a previous gradient),
//             of which the call holds a share
//   Snapshot  any other ArrayBuffer in an async call: copied on the calling thread
template <typename T>
struct Logits {
  ArrayView<T> view;                  // the caller's array, pinned for the call
  std::shared_ptr<at::Tensor> owner;  // tdpo-owned memory kept alive
  at::Tensor snapshot;                // the copy, when one was taken
  const T* data() const { return snapshot.defined() ? snapshot.template data_ptr<T>() : view.data; }
};

template <typename T>
struct LossCall {
  Logits<T> policy, reference;
  std::vector<int32_t> labels;  // always a copy: validated values cannot change under the kernel
  loss::Inputs<T> inputs;
  loss::Options options;
  loss::Implementation implementation = loss::Implementation::Fused;
};

template <typename T>
void hold(Logits<T>& l, Napi::Value array, bool async) {
  if (!async) return;
  Napi::Value buffer = array.As<Napi::TypedArray>().ArrayBuffer();
  if (!buffer.IsArrayBuffer()) return;  // a SharedArrayBuffer: stays, and never shrinks
  l.owner = OwnedBuffers::find(buffer.As<Napi::ArrayBuffer>().Data());
  if (l.owner) return;
  const auto dtype = std::is_same_v<T, float> ? at::kFloat : at::kDouble;
  const int64_t n = static_cast<int64_t>(l.view.length);
  l.snapshot = at::empty({n}, at::TensorOptions().dtype(dtype));
  l.snapshot.copy_(at::from_blob(const_cast<T*>(l.view.data), {n}, at::TensorOptions().dtype(dtype)));
}

template <typename T>
LossCall<T> parse(const Napi::CallbackInfo& info, bool async) {
  LossCall<T> call;
  Napi::Object in = object_arg(info[0], "inputs");
  Napi::Object opt = object_arg(info[1], "options");

  // First every read that can run the caller's code (getters, proxies), then the pointers: a
  // getter that ran after a pointer was taken could detach or shrink the buffer under it.
  call.options.objective = loss::parse_objective(string_field(opt, "variant", "options"), "options.variant", false);
  call.implementation = loss::parse_implementation(string_field(opt, "implementation", "options"));
  call.options.beta = number_field(opt, "beta", "options");
  call.options.alpha = number_field(opt, "alpha", "options");
  call.options.grad = bool_field(opt, "grad", "options");
  call.options.entropy = bool_field(opt, "entropy", "options");
  const auto shape = shape_field(in, "shape", "inputs", 3);
  const Napi::Value policy = in.Get("policyLogits");
  const Napi::Value reference = in.Get("referenceLogits");
  const Napi::Value labels = in.Get("labels");

  std::ostringstream shape_text;
  shape_text << "[" << shape[0] << ", " << shape[1] << ", " << shape[2] << "]";
  call.policy.view = typed_array_view<T>(policy, "inputs.policyLogits");
  call.reference.view = typed_array_view<T>(reference, "inputs.referenceLogits");
  auto label_view = typed_array_view<int32_t>(labels, "inputs.labels");
  expect_length(call.policy.view.length, shape[0] * shape[1] * shape[2], "inputs.policyLogits",
                shape_text.str());
  expect_length(call.reference.view.length, shape[0] * shape[1] * shape[2],
                "inputs.referenceLogits", shape_text.str());
  expect_length(label_view.length, shape[0] * shape[1], "inputs.labels", shape_text.str());
  call.labels.assign(label_view.data, label_view.data + label_view.length);

  call.inputs.labels = call.labels.data();
  call.inputs.batch = shape[0];
  call.inputs.seq = shape[1];
  call.inputs.vocab = shape[2];
  // Shape, labels and option values: cheap, and better reported before anything is copied.
  call.inputs.policy = call.policy.view.data;
  call.inputs.reference = call.reference.view.data;
  loss::validate(call.inputs, call.options);
  hold(call.policy, policy, async);
  hold(call.reference, reference, async);
  call.inputs.policy = call.policy.data();
  call.inputs.reference = call.reference.data();
  return call;
}

template <typename T>
loss::Result run(const LossCall<T>& call) {
  if constexpr (std::is_same_v<T, float>) {
    return loss::compute(call.implementation, call.inputs, call.options);
  } else {
    return loss::fused(call.inputs, call.options);
  }
}

// Per-pair fields come back in the inputs' precision (Float32Array for the public float32 API).
template <typename T>
Napi::Object result_to_js(Napi::Env env, loss::Result& res) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("loss", res.loss);
  out.Set("losses", typed_copy<T>(env, res.losses));
  out.Set("chosenRewards", typed_copy<T>(env, res.chosen_rewards));
  out.Set("rejectedRewards", typed_copy<T>(env, res.rejected_rewards));
  out.Set("chosenLogratio", typed_copy<T>(env, res.chosen_logratio));
  out.Set("rejectedLogratio", typed_copy<T>(env, res.rejected_logratio));
  out.Set("chosenKl", typed_copy<T>(env, res.chosen_kl));
  out.Set("rejectedKl", typed_copy<T>(env, res.rejected_kl));
  out.Set("chosenLogps", typed_copy<T>(env, res.chosen_logps));
  out.Set("rejectedLogps", typed_copy<T>(env, res.rejected_logps));
  if (!res.chosen_entropy.empty() || !res.rejected_entropy.empty()) {  // asked for (options.entropy)
    out.Set("chosenEntropy", typed_copy<T>(env, res.chosen_entropy));
    out.Set("rejectedEntropy", typed_copy<T>(env, res.rejected_entropy));
  }
  if (res.grad.defined()) out.Set("grad", tensor_to_typed_array(env, res.grad));
  return out;
}

}  // namespace

Napi::Value LossSync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto call = parse<float>(info, /*async=*/false);
    auto res = run(call);
    return result_to_js<float>(info.Env(), res);
  });
}

Napi::Value LossAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promise_call(env, [&]() -> Napi::Value {
    // The call holds the pins on the input arrays until the promise settles.
    auto call = std::make_shared<LossCall<float>>(parse<float>(info, /*async=*/true));
    auto result = std::make_shared<loss::Result>();
    return TaskWorker::Run(
        env, "tdpo:loss", [call, result] { *result = run(*call); },
        [call, result](Napi::Env env) -> Napi::Value { return result_to_js<float>(env, *result); });
  });
}

// checkLossOptions({ variant, beta, alpha }, prefix): src/loss's checks, for the config.
Napi::Value CheckLossOptions(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Object opt = object_arg(info[0], "options");
    const std::string prefix = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "options.";
    loss::Options o;
    o.objective = loss::parse_objective(string_field(opt, "variant", "options"), prefix + "variant", false);
    o.beta = number_field(opt, "beta", "options");
    o.alpha = number_field(opt, "alpha", "options");
    loss::validate_options(o, prefix);
    return info.Env().Undefined();
  });
}

Napi::Value LossFloat64ForTest(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto call = parse<double>(info, /*async=*/false);
    auto res = run(call);
    return result_to_js<double>(info.Env(), res);
  });
}

}  // namespace tdpo::binding
