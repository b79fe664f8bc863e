// Shared test fixtures: seeded random inputs for the loss; weights read back from saved models.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { TdpoLossInputs } from '../lib/index.js';

/** The tensors of a safetensors file as float32 (F32, or BF16 widened exactly). */
export function readWeights(file: string): Map<string, Float32Array> {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const out = new Map<string, Float32Array>();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const bytes = buf.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]);
    if (t.dtype === 'F32') {
      out.set(name, new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
    } else if (t.dtype === 'BF16') {
      // A bfloat16 is a float32's upper 16 bits: exact as float32.
      const halves = new Uint16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
      out.set(name, new Float32Array(Uint32Array.from(halves, (h) => h << 16).buffer));
    } else {
      throw new Error(`${file}: ${name} is ${t.dtype}, not F32 or BF16`);
    }
  }
  return out;
}

/**
 * n pre-tokenised preference pairs (JSONL) with a learnable rule, chosen tokens even and rejected
 * odd, and varied lengths, so that padding differs between a whole batch and its shares.
 */
export function parityPairLines(n: number, seed: number): string {
  const r = rng(seed);
  const tok = (parity: number) => 2 + 2 * Math.floor(r() * 15) + parity;
  const len = () => 2 + Math.floor(r() * 4);
  const lines = Array.from({ length: n }, () =>
    JSON.stringify({
      prompt_ids: Array.from({ length: 1 + Math.floor(r() * 3) }, () => 2 + Math.floor(r() * 30)),
      chosen_ids: Array.from({ length: len() }, () => tok(0)),
      rejected_ids: Array.from({ length: len() }, () => tok(1)),
    }),
  );
  return `${lines.join('\n')}\n`;
}

/** A TCP port that was free a moment ago, for a rendezvous. */
export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

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
  'chosenEntropy',
  'rejectedEntropy',
] as const;
