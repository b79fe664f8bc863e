// setNumThreads / getNumThreads / releaseCachedMemory / cudaPeakBytes / buildInfo.
#include "binding/runtime.h"

#include <cmath>

#include "binding/convert.h"
#include "binding/errors.h"
#include "common/alloc.h"
#include "distributed/group.h"
#include "loss/fused_linear.h"
#include "loss/tdpo_loss.h"
#include "models/causal_lm.h"
#include "runtime/runtime.h"
#include "train/train_step.h"

namespace tdpo::binding {

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const double n = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : NAN;
    // Starting an OpenMP team costs ~20 ms a thread (setNumThreads(1000) took 20 s), and threads
    // beyond the CPUs only contend; 4x the CPUs still allows deliberate oversubscription.
    const int cpus = runtime::default_num_threads();
    const int most = 4 * cpus;
    if (!(n >= 1 && n <= most && std::floor(n) == n)) {
      throw range_error("ERR_TDPO_OPTION", "setNumThreads(n): n must be an integer in [1, " + std::to_string(most) +
                                               "] (4 x the " + std::to_string(cpus) +
                                               " CPUs this process may use), got " + describe(info[0]));
    }
    runtime::set_num_threads(static_cast<int>(n));
    return info.Env().Undefined();
  });
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), runtime::get_num_threads());
}

// cudaPeakBytes(index, reset): the device's peak allocated bytes (-1: unknown), then optionally
// starts a new peak.
Napi::Value CudaPeakBytes(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const double i = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : NAN;
    if (!(i >= 0 && i < 1024 && std::floor(i) == i)) {
      throw range_error("ERR_TDPO_OPTION", "cudaPeakBytes(index): index must be a device index, got " + describe(info[0]));
    }
    const int64_t peak = runtime::cuda_peak_bytes(static_cast<int>(i));
    if (info[1].ToBoolean()) runtime::reset_cuda_peak(static_cast<int>(i));
    return Napi::Number::New(info.Env(), static_cast<double>(peak));
  });
}

Napi::Value ReleaseCachedMemory(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(release_cached_memory()));
}

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("torchVersion", runtime::torch_version());
  out.Set("cuda", runtime::cuda_available());
  out.Set("cudaDevices", runtime::cuda_device_count());
  out.Set("defaultThreads", runtime::default_num_threads());
  out.Set("blasThreads", runtime::blas_threads());
  // c10d backends for distributed training (train's `distributed` option).
  const std::vector<std::string> names = dist::backends();
  Napi::Array backends = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); ++i) backends.Set(uint32_t(i), names[i]);
  out.Set("distributedBackends", backends);
  out.Set("kernelIsa", loss::kernel_isa());
  out.Set("fusedLinearRows", loss::cpu_row_math());
  // The attention kernels this libtorch has (a model's attnImplementation).
  Napi::Array kernels = Napi::Array::New(env);
  kernels.Set(0u, "eager");
  if (models::sdpa_available()) kernels.Set(1u, "sdpa");
  out.Set("attnImplementations", kernels);
  out.Set("trainKeyMask", train::key_mask_always() ? "always" : "when-needed");
  return out;
}

}  // namespace tdpo::binding
