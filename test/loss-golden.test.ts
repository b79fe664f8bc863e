// Both implementations against golden values from an independent implementation of the official
// TDPO formulas (test/golden/generate.py: PyTorch, float64).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { tdpoLossSync, type TdpoLossOptions } from '../lib/index.js';
import { PAIR_FIELDS, relError } from './helpers.js';

interface GoldenCase {
  name: string;
  shape: [number, number, number];
  options: TdpoLossOptions;
  policyLogits: Array<number | string>;
  referenceLogits: Array<number | string>;
  labels: number[];
  loss: number;
  grad: number[];
  [field: string]: unknown;
}

const golden = JSON.parse(
  readFileSync(new URL('./golden/loss-golden.json', import.meta.url), 'utf8'),
) as { cases: GoldenCase[] };
const f32 = (xs: Array<number | string>) => Float32Array.from(xs, Number);

describe('golden values (official formulas, PyTorch float64)', () => {
  expect(golden.cases.length).toBeGreaterThanOrEqual(7);
  for (const c of golden.cases) {
    for (const implementation of ['fused', 'reference'] as const) {
      it(`${implementation}: ${c.name}`, () => {
        const out = tdpoLossSync(
          {
            policyLogits: f32(c.policyLogits),
            referenceLogits: f32(c.referenceLogits),
            labels: Int32Array.from(c.labels),
            shape: c.shape,
          },
          { ...c.options, implementation, grad: true, entropy: true },
        );
        expect(Math.abs(out.loss - c.loss) / Math.max(Math.abs(c.loss), 1e-6)).toBeLessThan(1e-4);
        for (const field of PAIR_FIELDS) {
          expect(relError(out[field], c[field] as number[], 1e-3), field).toBeLessThan(1e-4);
        }
        expect(relError(out.grad!, c.grad)).toBeLessThan(1e-4);
      });
    }
  }
});
