// setNumThreads / getNumThreads / releaseCachedMemory / buildInfo.
#include "binding/runtime.h"

#include <cmath>

#include "binding/errors.h"
#include "common/alloc.h"
#include "runtime/runtime.h"

namespace tdpo::binding {

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const double n = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : NAN;
    if (!(n >= 1 && n <= 4096 && std::floor(n) == n)) {
      throw range_error("ERR_TDPO_OPTION", "setNumThreads(n): n must be an integer in [1, 4096], got " +
                                               info[0].ToString().Utf8Value());
    }
    runtime::set_num_threads(static_cast<int>(n));
    return info.Env().Undefined();
  });
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), runtime::get_num_threads());
}

Napi::Value ReleaseCachedMemory(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(release_cached_memory()));
}

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("torchVersion", runtime::torch_version());
  out.Set("cuda", runtime::cuda_available());
  out.Set("defaultThreads", runtime::default_num_threads());
  return out;
}

}  // namespace tdpo::binding
