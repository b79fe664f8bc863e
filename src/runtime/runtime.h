// Process-wide libtorch settings the addon exposes: intra-op threads and build information.
#pragma once

#include <cstdint>
#include <string>

namespace tdpo::runtime {

// libtorch may start with one intra-op thread (Debian's build does); we default to every core.
void set_num_threads(int n);  // throws ERR_TDPO_OPTION for n < 1
int get_num_threads();
// OpenBLAS's thread count, which set_num_threads keeps equal to the intra-op count; -1 where the
// process's BLAS is not OpenBLAS (MKL follows at::set_num_threads by itself).
int blas_threads();
int default_num_threads();

std::string torch_version();  // e.g. "1.13.0"
bool cuda_available();
int cuda_device_count();  // 0 without CUDA

// The most bytes CUDA device `index`'s caching allocator has had allocated since the last reset
// (torch.cuda.max_memory_allocated), or -1 where this libtorch cannot say: at::accelerator's
// device-agnostic memory statistics arrived in libtorch 2.9, and the addon links no CUDA library
// of its own. reset_cuda_peak is a no-op there.
int64_t cuda_peak_bytes(int index);
void reset_cuda_peak(int index);

}  // namespace tdpo::runtime
