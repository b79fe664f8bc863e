// The golden model checkpoints (test/golden/models, made by test/golden/generate_models.py) and their
// expected logits, shared by the model, device and transformers tests.
import { readFileSync } from 'node:fs';
import path from 'node:path';

export interface ModelCase {
  name: string;
  shape: [number, number];
  inputIds: number[];
  attentionMask: number[];
  logits: number[];
  maskedLogits: number[];
}

export const golden = JSON.parse(readFileSync(path.join(__dirname, 'golden', 'model-golden.json'), 'utf8')) as { cases: ModelCase[] };
/** The Llama-family checkpoints (test/golden/generate_llama.py). */
export const llamaGolden = JSON.parse(readFileSync(path.join(__dirname, 'golden', 'llama-golden.json'), 'utf8')) as { cases: ModelCase[] };
export const dirOf = (name: string): string => path.join(__dirname, 'golden', 'models', name);

/** max |a - b| over positions where keep(position), relative to the largest |expected| logit there. */
export function logitError(actual: ArrayLike<number>, expected: ArrayLike<number>, V: number, keep: (position: number) => boolean = () => true): number {
  let diff = 0;
  let scale = 1e-12;
  for (let i = 0; i < expected.length; i++) {
    if (!keep(Math.floor(i / V))) continue;
    diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return diff / scale;
}
