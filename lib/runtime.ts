// Process-wide native settings.
import { native, type AttnImplementation, type BuildInfo } from './native.js';

/** Sets libtorch's intra-op thread count (the fused kernel and every libtorch op use it). */
export function setNumThreads(n: number): void {
  native.setNumThreads(n);
}

/** The current intra-op thread count; defaults to the CPUs this process may run on. */
export function getNumThreads(): number {
  return native.getNumThreads();
}

/**
 * The fused loss keeps the most recently freed gradient buffer (the [B, T, V] array, once the
 * garbage collector drops it) for the next call of the same size: reusing it avoids page faults
 * that cost more than the kernel itself on some machines. This frees that buffer now; it returns
 * the bytes released.
 */
export function releaseCachedMemory(): number {
  return native.releaseCachedMemory();
}

/**
 * The most bytes CUDA device `index`'s caching allocator has had allocated since the last reset
 * (as torch.cuda.max_memory_allocated); `reset` then starts a new peak. null where the addon
 * cannot say: no such device, or a libtorch older than 2.9 (before its device-agnostic statistics).
 */
export function cudaPeakBytes(index = 0, reset = false): number | null {
  const n = native.cudaPeakBytes(index, reset);
  return n < 0 ? null : n;
}

/** The attention kernel a model runs when none is asked for: SDPA where this build has it (libtorch >= 2.3). */
export function defaultAttnImplementation(): AttnImplementation {
  return native.buildInfo().attnImplementations.includes('sdpa') ? 'sdpa' : 'eager';
}

/** What the loaded binary was built against. */
export function buildInfo(): BuildInfo {
  return native.buildInfo();
}

export type { BuildInfo };
