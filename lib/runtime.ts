// Process-wide native settings.
import { native, type BuildInfo } from './native.js';

/** Sets libtorch's intra-op thread count (the fused kernel and every libtorch op use it). */
export function setNumThreads(n: number): void {
  native.setNumThreads(n);
}

/** The current intra-op thread count; defaults to the CPUs this process may run on. */
export function getNumThreads(): number {
  return native.getNumThreads();
}

/** What the loaded binary was built against. */
export function buildInfo(): BuildInfo {
  return native.buildInfo();
}

export type { BuildInfo };
