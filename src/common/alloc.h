// Large output buffers (the [B, T, V] gradient).
//
// Why not at::empty: on the virtual machines we measured, first-touch page faults cost ~2.7 us per
// 4 KiB page (1.1 s to fault in 400 MB), which was most of the fused backward pass. So large
// buffers are (1) 2 MiB aligned and madvise(MADV_HUGEPAGE)d, which cuts faults 512-fold where THP
// runs in "madvise" mode, and (2) recycled: the most recently freed block is kept and handed to the
// next request of the same size, so steady-state calls (a training loop, a benchmark) fault nothing.
#pragma once

#include <ATen/ATen.h>

namespace tdpo {

// An uninitialised tensor; small ones come from at::empty.
at::Tensor empty_large(at::IntArrayRef shape, at::ScalarType dtype);

// Frees the cached block (if any); returns the bytes released.
size_t release_cached_memory();

}  // namespace tdpo
