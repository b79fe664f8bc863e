// The fused linear loss with libtorch ops for the per-row math, what it runs on CUDA, checked on
// the CPU (TDPO_FUSED_LINEAR_ROWS=aten is read when the addon loads: vitest runs each test file in
// its own process, and this file loads the library only after setting it).
import { expect, it } from 'vitest';
import { fusedLinearSuite } from './fused-linear-cases.js';

process.env.TDPO_FUSED_LINEAR_ROWS = 'aten';
const lib = await import('../lib/index.js');

it('runs the libtorch row math', () => {
  expect(lib.buildInfo().fusedLinearRows).toBe('aten');
});
fusedLinearSuite(lib);
