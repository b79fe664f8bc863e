#pragma once

#include <napi.h>

namespace tdpo::binding {

Napi::Value LossSync(const Napi::CallbackInfo& info);   // tdpoLossSync(inputs, options): options complete
Napi::Value LossAsync(const Napi::CallbackInfo& info);  // tdpoLoss(inputs, options?) -> Promise
// Float64Array inputs through the same templated fused kernel, for finite-difference tests.
Napi::Value LossFloat64ForTest(const Napi::CallbackInfo& info);
// checkLossOptions(options, prefix): the loss's option checks alone (the config calls it).
Napi::Value CheckLossOptions(const Napi::CallbackInfo& info);

}  // namespace tdpo::binding
