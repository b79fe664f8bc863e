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
#include <sched.h>
#endif

#include "common/error.h"

namespace tdpo::runtime {

void set_num_threads(int n) {
  if (n < 1) {
    throw range_error("ERR_TDPO_OPTION",
                      "threads must be an integer >= 1, got " + std::to_string(n));
  }
  at::set_num_threads(n);
}

int get_num_threads() { return at::get_num_threads(); }

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
