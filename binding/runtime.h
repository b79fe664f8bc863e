#pragma once

#include <napi.h>

namespace tdpo::binding {

Napi::Value SetNumThreads(const Napi::CallbackInfo& info);
Napi::Value GetNumThreads(const Napi::CallbackInfo& info);
Napi::Value ReleaseCachedMemory(const Napi::CallbackInfo& info);
Napi::Value CudaPeakBytes(const Napi::CallbackInfo& info);
Napi::Value BuildInfo(const Napi::CallbackInfo& info);

}  // namespace tdpo::binding
