// The demo's settings and its first stage: the reference model πref, a small GPT-2 trained from
// scratch with our SFT path on the WordNet corpus (the pairs are stage 3, pairs.ts). A stage writes
// its artefact and is skipped on a rerun when the artefact is there.
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { shuffled } from '../data/preferences.js';
import { Model } from '../model.js';
import { TrainStep } from '../train/train-step.js';
import type { Corpus } from './corpus.js';
import type { NarrowVocab } from './vocab.js';

export interface DemoSettings {
  seeds: number[];
  /** The corpus's most frequent tokens kept; sentences with others are left out. */
  vocabTokens: number;
  sftSteps: number;
  sftBatch: number;
  promptTokens: number;
  /** Every sample, for the pairs and the evaluation, is this many tokens: see pairs.ts. */
  continuationTokens: number;
  pairPrompts: number;
  /** πref samples per pair prompt; the best and the worst make the pair. */
  samplesPerPrompt: number;
  /** Smallest reward gap (best − worst) a pair is kept with. */
  minGap: number;
  trainSteps: number;
  trainBatch: number;
  evalEvery: number;
  evalPrompts: number;
  evalPairs: number;
  beta: number;
  lr: number;
  methods: Array<{ name: string; loss: 'dpo' | 'tdpo1' | 'tdpo2'; alpha: number }>;
}

export const modelShape = { n_positions: 48, n_embd: 128, n_layer: 3, n_head: 4 };

/** Sentences as [EOS, tokens..., EOS] rows of the narrowed vocabulary, at most maxLen long. */
export function encodeSentences(sentences: string[], vocab: NarrowVocab, maxLen: number): Int32Array[] {
  const rows: Int32Array[] = [];
  for (const s of sentences) {
    const ids = vocab.encode(s);
    if (!ids || ids.length + 2 > maxLen) continue;
    rows.push(Int32Array.from([vocab.eosId, ...ids, vocab.eosId]));
  }
  return rows;
}

/**
 * Batches of rows of similar length, in a seeded random order. A batch is padded to its longest
 * row, and with rows drawn at random that is about twice the real tokens on this corpus.
 */
export function lengthBatches<T>(rows: readonly T[], length: (row: T) => number, size: number, seed: number): T[][] {
  const byLength = shuffled(rows, seed).sort((a, b) => length(a) - length(b));
  const batches: T[][] = [];
  for (let i = 0; i < byLength.length; i += size) batches.push(byLength.slice(i, i + size));
  return shuffled(batches, seed + 1);
}

function sftBatch(rows: Int32Array[], pad: number) {
  const T = Math.max(...rows.map((r) => r.length));
  const inputIds = new Int32Array(rows.length * T).fill(pad);
  const labels = new Int32Array(rows.length * T).fill(-100);
  const attentionMask = new Int32Array(rows.length * T);
  rows.forEach((r, b) => {
    inputIds.set(r, b * T);
    labels.set(r.subarray(1), b * T + 1); // the leading EOS is context, not a target
    attentionMask.fill(1, b * T, b * T + r.length);
  });
  return { inputIds, labels, attentionMask, shape: [rows.length, T] as const };
}

/** Stage 2: πref by SFT from scratch. Returns its folder. */
export async function trainReference(
  dir: string,
  corpus: Corpus,
  vocab: NarrowVocab,
  s: DemoSettings,
  progress: (done: number, total: number, loss: number) => void,
): Promise<string> {
  const out = path.join(dir, 'reference');
  if (existsSync(path.join(out, 'model.safetensors'))) return out;
  const config = { model_type: 'gpt2', vocab_size: vocab.size, eos_token_id: vocab.eosId, ...modelShape };
  const model = await Model.create(config, { seed: 1234 });
  const step = await TrainStep.create(model, { loss: 'sft', optimizer: 'adamw' });
  const batches = lengthBatches(encodeSentences(corpus.train, vocab, modelShape.n_positions), (r) => r.length, s.sftBatch, 1);
  for (let i = 0; i < s.sftSteps; i++) {
    const stats = await step.accumulate(sftBatch(batches[i % batches.length], vocab.eosId));
    // Linear warm-up then constant: a short, stable schedule for a model trained from scratch.
    await step.apply(2e-3 * Math.min(1, (i + 1) / 50), 1);
    progress(i + 1, s.sftSteps, stats.loss);
  }
  mkdirSync(dir, { recursive: true });
  await model.save(out);
  model.dispose();
  return out;
}

/** Held-out prompts: EOS + the first promptTokens tokens of a held-out sentence (one that goes on). */
export function heldOutPrompts(corpus: Corpus, vocab: NarrowVocab, promptTokens: number, count: number): number[][] {
  const out: number[][] = [];
  for (const s of corpus.heldOut) {
    const ids = vocab.encode(s);
    if (!ids || ids.length <= promptTokens + 1) continue;
    out.push([vocab.eosId, ...ids.subarray(0, promptTokens)]);
    if (out.length === count) break;
  }
  return out;
}

/**
 * A fixed-length continuation's ids and its text: where πref ended a sentence (EOS) and began
 * another, the sentences are joined by a space.
 */
export function continuationText(ids: ArrayLike<number>, vocab: NarrowVocab): { ids: number[]; text: string } {
  const list = Array.from(ids);
  const sentences: number[][] = [[]];
  for (const id of list) {
    if (id === vocab.eosId) sentences.push([]);
    else sentences[sentences.length - 1].push(id);
  }
  const text = sentences.filter((x) => x.length).map((x) => vocab.decode(x).trim()).join(' ');
  return { ids: list, text };
}
