#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <string>

#include "models/causal_lm.h"

namespace tdpo::binding {

// What a JS NativeModel holds: the model, and a mutex that serialises the calls running on it.
struct ModelState {
  std::mutex mu;
  std::shared_ptr<models::CausalLM> model;
};
using StatePtr = std::shared_ptr<ModelState>;

// Per-environment data (one per Node.js main thread or worker thread that loads the addon): the
// constructors of the native classes.
struct InstanceData {
  Napi::FunctionReference model_class;
  Napi::FunctionReference trainer_class;
  Napi::FunctionReference group_class;
};

// The state behind a NativeModel passed from JS (throws ERR_TDPO_TYPE / ERR_TDPO_DISPOSED).
StatePtr unwrap_model(Napi::Value value, const std::string& name);
// A new NativeModel object around `state`.
Napi::Object wrap_model(Napi::Env env, StatePtr state);

// Registers createModel / loadModel and the NativeModel class on exports.
void InitModel(Napi::Env env, Napi::Object exports);

}  // namespace tdpo::binding
