#include "common/alloc.h"

#include <cstdlib>
#include <mutex>
#include <new>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace tdpo {
namespace {

constexpr size_t kHuge = size_t(2) << 20;

struct Cache {
  std::mutex mu;
  void* block = nullptr;
  size_t bytes = 0;
};
Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: deleters may run during process teardown
  return *c;
}

void give_back(void* p, size_t bytes) {
  Cache& c = cache();
  void* evicted = nullptr;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    evicted = c.block;
    c.block = p;
    c.bytes = bytes;
  }
  std::free(evicted);
}

void* take(size_t bytes) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.block != nullptr && c.bytes == bytes) {
    void* p = c.block;
    c.block = nullptr;
    c.bytes = 0;
    return p;
  }
  return nullptr;
}

}  // namespace

at::Tensor empty_large(at::IntArrayRef shape, at::ScalarType dtype) {
  const auto options = at::TensorOptions().dtype(dtype);
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const size_t bytes = size_t(numel) * at::elementSize(dtype);
  if (bytes < 2 * kHuge) return at::empty(shape, options);
  const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
  void* p = take(rounded);
  if (p == nullptr) {
    p = std::aligned_alloc(kHuge, rounded);
    if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, rounded, MADV_HUGEPAGE);  // advisory: failure just means 4 KiB pages
#endif
  }
  return at::from_blob(p, shape, [rounded](void* q) { give_back(q, rounded); }, options);
}

size_t release_cached_memory() {
  Cache& c = cache();
  void* p;
  size_t bytes;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    p = c.block;
    bytes = c.bytes;
    c.block = nullptr;
    c.bytes = 0;
  }
  std::free(p);
  return bytes;
}

}  // namespace tdpo
