// The fused linear loss with the SIMD row kernel (the CPU default); see fused-linear-cases.ts.
import { expect, it } from 'vitest';
import * as lib from '../lib/index.js';
import { fusedLinearSuite } from './fused-linear-cases.js';

it.skipIf(!!process.env.TDPO_FUSED_LINEAR_ROWS)('runs the SIMD row kernel', () => {
  expect(lib.buildInfo().fusedLinearRows).toBe('kernel');
});
fusedLinearSuite(lib);
