#pragma once

#include <napi.h>

namespace tdpo::binding {

// Registers createTrainer and the NativeTrainer class on exports.
void InitTrainer(Napi::Env env, Napi::Object exports);

}  // namespace tdpo::binding
