#include "runtime/runtime.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
#define TDPO_ACCELERATOR_STATS 1
#include <ATen/DeviceAccelerator.h>
#else
#define TDPO_ACCELERATOR_STATS 0
#endif
#include <torch/version.h>

#include <thread>

#ifdef __linux__
#include <dlfcn.h>
#include <link.h>
#include <sched.h>
#endif

#include "common/error.h"

namespace tdpo::runtime {

namespace {

using SetBlasThreads = void (*)(int);
using GetBlasThreads = int (*)();

struct OpenBlas {
  SetBlasThreads set = nullptr;
  GetBlasThreads get = nullptr;
};

#ifdef __linux__
// libtorch loads its BLAS as a dependency of a library node dlopened without RTLD_GLOBAL, so
// dlsym(RTLD_DEFAULT) cannot see it: each mapped object is asked in turn.
int find_openblas(dl_phdr_info* info, size_t, void* data) {
  if (info->dlpi_name == nullptr || info->dlpi_name[0] == '\0') return 0;
  void* handle = dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) return 0;
  auto* found = static_cast<OpenBlas*>(data);
  found->set = reinterpret_cast<SetBlasThreads>(dlsym(handle, "openblas_set_num_threads"));
  found->get = reinterpret_cast<GetBlasThreads>(dlsym(handle, "openblas_get_num_threads"));
  dlclose(handle);  // NOLOAD took a reference; the library stays mapped for libtorch
  return found->set != nullptr && found->get != nullptr ? 1 : 0;
}
#endif

const OpenBlas& openblas() {
  static const OpenBlas found = [] {
    OpenBlas f;
#ifdef __linux__
    dl_iterate_phdr(find_openblas, &f);
    if (f.set == nullptr || f.get == nullptr) f = OpenBlas{};
#endif
    return f;
  }();
  return found;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1) {
    throw range_error("ERR_TDPO_OPTION",
                      "threads must be an integer >= 1, got " + std::to_string(n));
  }
  at::set_num_threads(n);
  // ATen passes the count to OpenMP and MKL but not to OpenBLAS (Debian's libtorch), whose own
  // pool otherwise runs every matmul on all cores: `threads: 1`, or one core per data-parallel
  // worker, still used them all (CPU time 2.0x wall time at threads 1 on 2 cores).
  if (openblas().set != nullptr) openblas().set(n);
}

int get_num_threads() { return at::get_num_threads(); }

int blas_threads() { return openblas().get != nullptr ? openblas().get() : -1; }

int default_num_threads() {
#ifdef __linux__
  // The CPUs this process may run on (taskset, container cpusets), not all the machine has.
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

bool cuda_available() { return torch::cuda::is_available(); }

int cuda_device_count() { return static_cast<int>(torch::cuda::device_count()); }

#if TDPO_ACCELERATOR_STATS
int64_t cuda_peak_bytes(int index) {
  if (index < 0 || index >= cuda_device_count()) return -1;
  const auto stats = at::accelerator::getDeviceStats(static_cast<c10::DeviceIndex>(index));
  // Spelled through CachingDeviceAllocator, which declares StatType or (2.13) pulls it in.
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingDeviceAllocator::StatType::AGGREGATE)].peak;
}

void reset_cuda_peak(int index) {
  if (index >= 0 && index < cuda_device_count()) at::accelerator::resetPeakStats(static_cast<c10::DeviceIndex>(index));
}
#else
int64_t cuda_peak_bytes(int) { return -1; }
void reset_cuda_peak(int) {}
#endif

}  // namespace tdpo::runtime
