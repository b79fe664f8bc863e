// A caching CPU allocator for libtorch's large buffers.
//
// Why: on the virtual machines we measured, a first touch of fresh memory costs ~2.7 us per 4 KiB
// page (1.1 s to fault in 400 MiB). libtorch's default CPU allocator hands every large tensor
// fresh pages from the kernel and returns them on free, so the fused loss's gradient, a model's
// logits and activations, and every temporary of a train step paid that again on every call:
// about half of the fused backward pass, a quarter of a GPT-2 forward, most of a train step.
// This allocator keeps freed blocks of 1 MiB and up (by exact rounded size, up to a byte cap)
// and hands them to the next request of that size; new blocks are mapped 2 MiB aligned and
// advised as transparent huge pages. A request the cache cannot serve first unmaps cached blocks
// of other sizes where it would otherwise take the footprint (live + cached) above the highest
// live total so far, so peak RSS follows the live peak rather than live + cap (a train step's:
// README, Memory and devices). Smaller requests go to libtorch's own allocator unchanged.
#pragma once

#include <cstddef>

namespace tdpo {

// Installs the allocator as libtorch's CPU allocator (once); cap_bytes = 0 disables caching.
void install_caching_allocator(size_t cap_bytes);

// Frees every cached block; returns the bytes released.
size_t release_cached_memory();

// Where a train step's memory peaks. With TDPO_MEMORY_TRACE=1 in the environment when the
// allocator is installed, ends the current phase and starts `name`, printing one line to stderr:
// the ended phase's highest live bytes in this allocator (CPU blocks of 1 MiB and up: tensors, not
// Node or the libraries), the live bytes now and the highest since start-up. Otherwise does
// nothing. One phase per process: steps running at once (two trainers, a generate() beside a
// step) share it.
void memory_phase(const char* name);

}  // namespace tdpo
