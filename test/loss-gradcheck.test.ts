// The fused kernel's analytic gradient against central finite differences of its own loss, in
// float64 through the test-only entry point over the same templated kernel.
import { describe, expect, it } from 'vitest';
import type { TdpoLossOptions, TdpoVariant } from '../lib/index.js';
import { native } from '../lib/native.js';
import { lossOptions } from '../lib/loss.js';
import { randomInputs, rng } from './helpers.js';

function float64Inputs(seed: number, negInf = 0) {
  const f = randomInputs({ B, T, V, prompt: 1, seed, negInf });
  return {
    policyLogits: Float64Array.from(f.policyLogits),
    referenceLogits: Float64Array.from(f.referenceLogits),
    labels: f.labels,
    shape: f.shape,
  };
}

const B = 4;
const T = 4;
const V = 19;

describe('gradient = finite differences (float64)', () => {
  // TDPO2 stops the gradient through the chosen side's KL, which a finite difference of the loss
  // cannot see; its chosen rows are checked separately below. Every other element's gradient is
  // the derivative of the loss itself.
  const variants: TdpoVariant[] = ['tdpo2', 'tdpo1', 'dpo'];
  for (const variant of variants) {
    for (const negInf of [0, 10]) {
      it(`${variant}${negInf ? ' with -inf entries' : ''}`, () => {
        const inputs = float64Inputs(11 + negInf, negInf);
        const options: TdpoLossOptions = { variant, beta: 0.7, alpha: 0.6, grad: true };
        const { grad } = native.lossFloat64ForTest(inputs, lossOptions(options));
        expect(grad).toBeInstanceOf(Float64Array);
        const z = inputs.policyLogits;
        const pick = rng(3);
        const h = 1e-5;
        const firstElement = variant === 'tdpo2' ? (B / 2) * T * V : 0; // rejected rows only
        let checked = 0;
        for (let k = 0; k < 120; k++) {
          const i = firstElement + Math.floor(pick() * (z.length - firstElement));
          if (!Number.isFinite(z[i])) continue;
          const saved = z[i];
          z[i] = saved + h;
          const up = native.lossFloat64ForTest(inputs, lossOptions({ ...options, grad: false })).loss;
          z[i] = saved - h;
          const down = native.lossFloat64ForTest(inputs, lossOptions({ ...options, grad: false })).loss;
          z[i] = saved;
          const numeric = (up - down) / (2 * h);
          expect(Math.abs(grad![i] - numeric), `element ${i}`).toBeLessThan(1e-9 + 1e-6 * Math.abs(numeric));
          checked++;
        }
        expect(checked).toBeGreaterThan(100);
      });
    }
  }

  it('tdpo2: chosen rows get only the log-ratio term (stop-gradient on the chosen KL)', () => {
    // Expected: d loss / d z = c_p * d Mw_p / d z, with c_p = -beta sigma(-beta logit_p) / P and
    // logit_p = (Mw - Ml) - alpha (Kl - Kw); d Mw / d z by finite differences of chosenLogratio.
    const inputs = float64Inputs(31);
    const beta = 0.7;
    const alpha = 0.6;
    const P = B / 2;
    const options: TdpoLossOptions = { variant: 'tdpo2', beta, alpha, grad: true };
    const out = native.lossFloat64ForTest(inputs, lossOptions(options));
    const z = inputs.policyLogits;
    const h = 1e-5;
    for (let i = 0; i < P * T * V; i += 7) {
      const p = Math.floor(i / (T * V));
      const logit = out.chosenLogratio[p] - out.rejectedLogratio[p] - alpha * (out.rejectedKl[p] - out.chosenKl[p]);
      const c = (-beta / (1 + Math.exp(beta * logit))) / P;
      const saved = z[i];
      z[i] = saved + h;
      const up = native.lossFloat64ForTest(inputs, lossOptions({ ...options, grad: false })).chosenLogratio[p];
      z[i] = saved - h;
      const down = native.lossFloat64ForTest(inputs, lossOptions({ ...options, grad: false })).chosenLogratio[p];
      z[i] = saved;
      const expected = (c * (up - down)) / (2 * h);
      expect(Math.abs(out.grad![i] - expected), `element ${i}`).toBeLessThan(1e-9 + 1e-6 * Math.abs(expected));
    }
  });

  it('tdpo1 and dpo differ only through the KL gradient', () => {
    // With policy = reference, KL = 0 and d KL / d z = p - q = 0 at every row, so the two agree.
    const inputs = float64Inputs(21);
    const same = { ...inputs, referenceLogits: inputs.policyLogits.slice() };
    const t1 = native.lossFloat64ForTest(same, lossOptions({ variant: 'tdpo1', grad: true })).grad!;
    const dpo = native.lossFloat64ForTest(same, lossOptions({ variant: 'dpo', grad: true })).grad!;
    for (let i = 0; i < t1.length; i++) expect(t1[i]).toBeCloseTo(dpo[i], 12);
    const differs = native.lossFloat64ForTest(inputs, lossOptions({ variant: 'tdpo1', grad: true })).grad!;
    const dpoGrad = native.lossFloat64ForTest(inputs, lossOptions({ variant: 'dpo', grad: true })).grad!;
    expect(differs.some((g, i) => Math.abs(g - dpoGrad[i]) > 1e-6)).toBe(true);
  });
});

describe('float64 kernel: the entropy', () => {
  it('is exact when its vector lanes hold maxima 1e308 apart (their difference overflows)', () => {
    // One scored position per row, V = 16: two entries at 1e308 (p = 1/2 each), one at -1e308 and
    // the rest -inf, so H = log 2; the lanes' maxima differ by 2e308, which is -inf in double.
    const V16 = 16;
    const z = new Float64Array(2 * V16).fill(-Infinity);
    for (const row of [0, 1]) [z[row * V16], z[row * V16 + 1], z[row * V16 + 2]] = [1e308, -1e308, 1e308];
    const inputs = { policyLogits: z, referenceLogits: Float64Array.from(z), labels: Int32Array.from([0, 2]), shape: [2, 1, V16] };
    const out = native.lossFloat64ForTest(inputs, lossOptions({ entropy: true }));
    expect(out.chosenEntropy![0]).toBeCloseTo(Math.log(2), 12);
    expect(out.rejectedEntropy![0]).toBeCloseTo(Math.log(2), 12);
  });
});
