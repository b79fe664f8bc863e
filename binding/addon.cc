// Registration of every export; nothing else lives here.
#include <napi.h>

#include <cstdlib>

#include "binding/dist.h"
#include "binding/errors.h"
#include "binding/loss.h"
#include "binding/model.h"
#include "binding/trainer.h"
#include "binding/runtime.h"
#include "common/alloc.h"
#include "distributed/group.h"
#include "loss/fused_linear.h"
#include "loss/tdpo_loss.h"
#include "runtime/runtime.h"
#include "train/train_step.h"

namespace tdpo::binding {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // libtorch may start with a single intra-op thread; default to every core this process may use.
  guarded(env, [] { runtime::set_num_threads(runtime::default_num_threads()); });
  // Large buffers are recycled instead of faulted in afresh on every call (src/common/alloc.h).
  // TDPO_CPU_CACHE_MB sets the cap (0 disables); default 2 GiB.
  const char* cap_mb = std::getenv("TDPO_CPU_CACHE_MB");
  install_caching_allocator((cap_mb ? std::strtoull(cap_mb, nullptr, 10) : 2048ull) << 20);
  // The loss kernel's instruction set is chosen here, on the main thread, while no other thread
  // can be changing the environment (TDPO_KERNEL_ISA is read with getenv).
  loss::kernel_isa();
  loss::cpu_row_math();  // TDPO_FUSED_LINEAR_ROWS, likewise
  train::key_mask_always();  // TDPO_KEY_MASK, likewise
  dist::prepare_environment();  // NCCL's settings (a build with NCCL), likewise

  exports.Set("tdpoLossSync", Napi::Function::New(env, LossSync, "tdpoLossSync"));
  exports.Set("tdpoLoss", Napi::Function::New(env, LossAsync, "tdpoLoss"));
  exports.Set("lossFloat64ForTest", Napi::Function::New(env, LossFloat64ForTest));
  exports.Set("checkLossOptions", Napi::Function::New(env, CheckLossOptions, "checkLossOptions"));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads, "setNumThreads"));
  exports.Set("getNumThreads", Napi::Function::New(env, GetNumThreads, "getNumThreads"));
  exports.Set("releaseCachedMemory",
              Napi::Function::New(env, ReleaseCachedMemory, "releaseCachedMemory"));
  exports.Set("cudaPeakBytes", Napi::Function::New(env, CudaPeakBytes, "cudaPeakBytes"));
  InitModel(env, exports);
  InitTrainer(env, exports);
  InitDist(env, exports);
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo, "buildInfo"));
  return exports;
}

}  // namespace tdpo::binding

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  return tdpo::binding::Init(env, exports);
}

NODE_API_MODULE(tdpo, InitAddon)
