// Shared test fixtures: seeded random inputs for the loss.
import type { TdpoLossInputs } from '../lib/index.js';

/** mulberry32: a small seeded PRNG, so failures reproduce. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface CaseSpec {
  B: number;
  T: number;
  V: number;
  seed?: number;
  scale?: number;
  /** Leading positions of each row with label -100. */
  prompt?: number;
  /** Rows whose labels are all -100. */
  maskedRows?: number[];
  /** How many (b, t, v) entries are -inf in both models (never at a label). */
  negInf?: number;
}

export function randomInputs(spec: CaseSpec): TdpoLossInputs {
  const { B, T, V, scale = 3, prompt = 1, maskedRows = [], negInf = 0 } = spec;
  const rand = rng(spec.seed ?? 1);
  const gauss = () => {
    const u = Math.max(rand(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
  };
  const n = B * T * V;
  const policyLogits = new Float32Array(n);
  const referenceLogits = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    policyLogits[i] = gauss() * scale;
    referenceLogits[i] = policyLogits[i] + gauss() * scale * 0.5;
  }
  const labels = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      labels[b * T + t] = t < prompt || maskedRows.includes(b) ? -100 : Math.floor(rand() * V);
    }
  }
  for (let k = 0; k < negInf; k++) {
    const row = Math.floor(rand() * B * T);
    let v = Math.floor(rand() * V);
    if (labels[row] === v) v = (v + 1) % V;
    policyLogits[row * V + v] = -Infinity;
    referenceLogits[row * V + v] = -Infinity;
  }
  return { policyLogits, referenceLogits, labels, shape: [B, T, V] };
}

/** max |a - b| / max(max |b|, floor): a relative error over the whole array. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-12): number {
  let diff = 0;
  let mag = floor;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    mag = Math.max(mag, Math.abs(b[i]));
  }
  return diff / mag;
}

export const PAIR_FIELDS = [
  'losses',
  'chosenRewards',
  'rejectedRewards',
  'chosenLogratio',
  'rejectedLogratio',
  'chosenKl',
  'rejectedKl',
  'chosenLogps',
  'rejectedLogps',
] as const;
