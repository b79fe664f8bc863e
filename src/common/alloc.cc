#include "common/alloc.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace tdpo {
namespace {

constexpr size_t kMinCached = size_t(1) << 20;  // below this, libtorch's allocator
constexpr size_t kHuge = size_t(2) << 20;

// Blocks are mapped and unmapped directly: glibc keeps freed blocks under its mmap threshold
// (which rises to 32 MiB as blocks are freed) in its heap, so std::free would not always give the
// memory back, and eviction (below) would not lower the process's footprint.
void* map_block(size_t bytes) {
#ifdef __linux__
  const size_t span = bytes + kHuge;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = (reinterpret_cast<uintptr_t>(raw) + kHuge - 1) & ~(uintptr_t(kHuge) - 1);
  const size_t head = start - reinterpret_cast<uintptr_t>(raw);
  if (head) munmap(raw, head);
  if (span - head - bytes) munmap(reinterpret_cast<void*>(start + bytes), span - head - bytes);
  void* p = reinterpret_cast<void*>(start);
#ifdef MADV_HUGEPAGE
  madvise(p, bytes, MADV_HUGEPAGE);  // advisory: failure just means 4 KiB pages
#endif
  return p;
#else
  return std::aligned_alloc(kHuge, bytes);
#endif
}

void unmap_block(void* p, size_t bytes) {
#ifdef __linux__
  munmap(p, bytes);
#else
  std::free(p);
#endif
}


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
      unmap_block(p, size);
      bytes += size;
    }
    return bytes;
  }

  void phase(const char* name) {
    std::string ended;
    size_t peak, live, all;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ended.swap(phase_);
      phase_ = name;
      peak = phase_peak_;
      live = live_bytes_;
      all = peak_live_;
      phase_peak_ = live_bytes_;
    }
    if (cap_ == 0) {
      std::fprintf(stderr, "tdpo memory: %-18s (TDPO_CPU_CACHE_MB=0: the cache is off and counts nothing)\n", ended.c_str());
      return;
    }
    std::fprintf(stderr, "tdpo memory: %-18s peak %7.3f GB live, at its end %7.3f GB; highest so far %7.3f GB\n",
                 ended.c_str(), peak / 1e9, live / 1e9, all / 1e9);
  }

 private:
  at::DataPtr do_allocate(size_t n) const {
    if (n < kMinCached || cap_ == 0) return fallback_->allocate(n);
    const size_t rounded = (n + kHuge - 1) / kHuge * kHuge;
    void* p = take(rounded);
    if (p == nullptr) {
      evict(rounded);
      p = map_block(rounded);
      if (p == nullptr) throw std::bad_alloc();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      live_[p] = rounded;
      live_bytes_ += rounded;
      peak_live_ = std::max(peak_live_, live_bytes_);
      phase_peak_ = std::max(phase_peak_, live_bytes_);
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

  // On a miss, cached blocks of other sizes go back to the system where the new block would take
  // our footprint (live + cached) above the highest live total so far: the cache then only fills
  // room that the process's peak has already taken, and a train step's peak RSS is its live peak,
  // not live + cap. Where blocks must go: the smallest single one that is enough, else the
  // largest ones until enough. Under a steady peak nothing is evicted and every size stays cached.
  void evict(size_t bytes) const {
    std::vector<std::pair<void*, size_t>> out;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const size_t budget = std::max(peak_live_, live_bytes_ + bytes);
      const size_t footprint = live_bytes_ + held_ + bytes;
      if (footprint <= budget) return;
      const size_t excess = footprint - budget;
      auto fit = free_.lower_bound(excess);
      while (fit != free_.end() && fit->second.empty()) ++fit;
      size_t freed = 0;
      auto pop = [&](std::map<size_t, std::vector<void*>>::iterator it) {
        out.emplace_back(it->second.back(), it->first);
        it->second.pop_back();
        held_ -= it->first;
        freed += it->first;
      };
      if (fit != free_.end()) {
        pop(fit);
      } else {
        for (auto it = free_.rbegin(); it != free_.rend() && freed < excess; ++it)
          while (!it->second.empty() && freed < excess) pop(std::prev(it.base()));
      }
    }
    for (const auto& [p, size] : out) unmap_block(p, size);
  }

  static void give_back(void* ctx);

  at::Allocator* fallback_;
  size_t cap_;
  mutable std::mutex mu_;
  mutable std::map<size_t, std::vector<void*>> free_;
  mutable size_t held_ = 0;
  mutable std::map<void*, size_t> live_;  // our blocks in use, by address
  mutable size_t live_bytes_ = 0, peak_live_ = 0;  // their sum, its highest
  mutable size_t phase_peak_ = 0;                  // the highest sum since memory_phase()
  std::string phase_ = "start-up";
};

CachingCpuAllocator* instance = nullptr;  // never destroyed: deleters may run at process exit
bool trace_phases = false;  // TDPO_MEMORY_TRACE=1, read at install (on the main thread, before any step)

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
      a->live_bytes_ -= bytes;
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
    unmap_block(p, bytes);
  }
}

}  // namespace

void install_caching_allocator(size_t cap_bytes) {
  static std::once_flag once;
  std::call_once(once, [cap_bytes] {
    const char* trace = std::getenv("TDPO_MEMORY_TRACE");
    trace_phases = trace && std::string(trace) == "1";
    instance = new CachingCpuAllocator(c10::GetCPUAllocator(), cap_bytes);
    c10::SetCPUAllocator(instance, /*priority=*/1);
  });
}

void memory_phase(const char* name) {
  if (trace_phases && instance) instance->phase(name);
}

size_t release_cached_memory() { return instance ? instance->release() : 0; }

}  // namespace tdpo
