#include "common/alloc.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace tdpo {
namespace {

constexpr size_t kMinCached = size_t(1) << 20;  // below this, libtorch's allocator
constexpr size_t kHuge = size_t(2) << 20;


class CachingCpuAllocator final : public at::Allocator {
 public:
  CachingCpuAllocator(at::Allocator* fallback, size_t cap) : fallback_(fallback), cap_(cap) {}

  // libtorch 1.x declares allocate() const, 2.x non-const: define both, so whichever the base
  // declares pure virtual is overridden and the other is a harmless overload.
  at::DataPtr allocate(size_t n) const { return do_allocate(n); }
  at::DataPtr allocate(size_t n) { return do_allocate(n); }
  // Pure virtual from libtorch 2.3 on; a plain member before.
  void copy_data(void* dest, const void* src, size_t count) const { std::memcpy(dest, src, count); }

  // raw_allocate() (which some libtorch code uses) requires context == data, so blocks are
  // found by address on free, and one deleter serves ours and the fallback's.
  at::DeleterFnPtr raw_deleter() const { return &CachingCpuAllocator::give_back; }

  size_t release() {
    std::vector<std::pair<void*, size_t>> all;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [size, list] : free_)
        for (void* p : list) all.emplace_back(p, size);
      free_.clear();
      held_ = 0;
    }
    size_t bytes = 0;
    for (const auto& [p, size] : all) {
      std::free(p);
      bytes += size;
    }
    return bytes;
  }

 private:
  at::DataPtr do_allocate(size_t n) const {
    if (n < kMinCached || cap_ == 0) return fallback_->allocate(n);
    const size_t rounded = (n + kHuge - 1) / kHuge * kHuge;
    void* p = take(rounded);
    if (p == nullptr) {
      p = std::aligned_alloc(kHuge, rounded);
      if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      madvise(p, rounded, MADV_HUGEPAGE);  // advisory: failure just means 4 KiB pages
#endif
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      live_[p] = rounded;
    }
    return {p, p, &CachingCpuAllocator::give_back, at::Device(at::kCPU)};
  }

  void* take(size_t bytes) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    held_ -= bytes;
    return p;
  }

  static void give_back(void* ctx);

  at::Allocator* fallback_;
  size_t cap_;
  mutable std::mutex mu_;
  mutable std::map<size_t, std::vector<void*>> free_;
  mutable size_t held_ = 0;
  mutable std::map<void*, size_t> live_;  // our blocks in use, by address
};

CachingCpuAllocator* instance = nullptr;  // never destroyed: deleters may run at process exit

void CachingCpuAllocator::give_back(void* p) {
  CachingCpuAllocator* a = instance;
  size_t bytes = 0;
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(a->mu_);
    auto it = a->live_.find(p);
    if (it != a->live_.end()) {
      bytes = it->second;
      a->live_.erase(it);
      if (a->held_ + bytes <= a->cap_) {
        a->free_[bytes].push_back(p);
        a->held_ += bytes;
        cached = true;
      }
    }
  }
  if (bytes == 0) {
    a->fallback_->raw_deleter()(p);  // a small block: the fallback allocator's own
  } else if (!cached) {
    std::free(p);
  }
}

}  // namespace

void install_caching_allocator(size_t cap_bytes) {
  static std::once_flag once;
  std::call_once(once, [cap_bytes] {
    instance = new CachingCpuAllocator(c10::GetCPUAllocator(), cap_bytes);
    c10::SetCPUAllocator(instance, /*priority=*/1);
  });
}

size_t release_cached_memory() { return instance ? instance->release() : 0; }

}  // namespace tdpo
