// tdpoLossSync / tdpoLoss: read the JS arguments into a LossCall (plain data plus pins on the input
// arrays), run src/loss on this thread or on a worker, and wrap the result. All argument checks
// happen here, before any work is queued, so the async call rejects with the same errors.
#include "binding/loss.h"

#include <sstream>

#include "binding/async.h"
#include "binding/convert.h"
#include "binding/errors.h"
#include "loss/tdpo_loss.h"

namespace tdpo::binding {
namespace {

template <typename T>
struct LossCall {
  ArrayView<T> policy, reference;
  ArrayView<int32_t> labels;
  loss::Inputs<T> inputs;
  loss::Options options;
  loss::Implementation implementation = loss::Implementation::Fused;
};

template <typename T>
LossCall<T> parse(const Napi::CallbackInfo& info) {
  LossCall<T> call;
  Napi::Object in = object_arg(info[0], "inputs");
  Napi::Object opt = object_arg(info[1], "options", /*optional=*/true);

  const auto shape = shape_field(in, "shape", "inputs", 3);
  std::ostringstream shape_text;
  shape_text << "[" << shape[0] << ", " << shape[1] << ", " << shape[2] << "]";
  call.policy = typed_array_field<T>(in, "policyLogits", "inputs");
  call.reference = typed_array_field<T>(in, "referenceLogits", "inputs");
  call.labels = typed_array_field<int32_t>(in, "labels", "inputs");
  expect_length(call.policy.length, shape[0] * shape[1] * shape[2], "inputs.policyLogits",
                shape_text.str());
  expect_length(call.reference.length, shape[0] * shape[1] * shape[2], "inputs.referenceLogits",
                shape_text.str());
  expect_length(call.labels.length, shape[0] * shape[1], "inputs.labels", shape_text.str());

  call.options.variant = loss::parse_variant(string_option(opt, "variant", "tdpo2", "options"));
  call.implementation =
      loss::parse_implementation(string_option(opt, "implementation", "fused", "options"));
  call.options.beta = number_option(opt, "beta", 0.1, "options");
  call.options.alpha = number_option(opt, "alpha", 0.5, "options");
  call.options.grad = bool_option(opt, "grad", false, "options");

  call.inputs.policy = call.policy.data;
  call.inputs.reference = call.reference.data;
  call.inputs.labels = call.labels.data;
  call.inputs.batch = shape[0];
  call.inputs.seq = shape[1];
  call.inputs.vocab = shape[2];
  // Shape, labels and option values: cheap, and better reported before any work is queued.
  loss::validate(call.inputs, call.options);
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
  if (res.grad.defined()) out.Set("grad", tensor_to_typed_array(env, res.grad));
  return out;
}

}  // namespace

Napi::Value LossSync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto call = parse<float>(info);
    auto res = run(call);
    return result_to_js<float>(info.Env(), res);
  });
}

Napi::Value LossAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promise_call(env, [&]() -> Napi::Value {
    // The call holds the pins on the input arrays until the promise settles.
    auto call = std::make_shared<LossCall<float>>(parse<float>(info));
    auto result = std::make_shared<loss::Result>();
    return TaskWorker::Run(
        env, "tdpo:loss", [call, result] { *result = run(*call); },
        [call, result](Napi::Env env) -> Napi::Value { return result_to_js<float>(env, *result); });
  });
}

Napi::Value LossFloat64ForTest(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto call = parse<double>(info);
    auto res = run(call);
    return result_to_js<double>(info.Env(), res);
  });
}

}  // namespace tdpo::binding
