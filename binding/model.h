#pragma once

#include <napi.h>

namespace tdpo::binding {

// Registers createModel / loadModel and the NativeModel class on exports.
void InitModel(Napi::Env env, Napi::Object exports);

}  // namespace tdpo::binding
