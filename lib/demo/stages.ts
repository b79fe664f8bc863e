// The demo's stages before the comparison: the reference model πref (a small GPT-2 trained from
// scratch with our SFT path on the WordNet corpus) and the preference pairs (two samples from πref
// per prompt, the more positive one chosen by the sentiment reward). Each stage writes its
// artefact and is skipped on a rerun when the artefact is there.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { shuffled } from '../data/preferences.js';
import { Model } from '../model.js';
import { TrainStep } from '../train/train-step.js';
import type { Corpus } from './corpus.js';
import { sentimentScore } from './reward.js';
import type { NarrowVocab } from './vocab.js';

export interface DemoSettings {
  seeds: number[];
  sftSteps: number;
  sftBatch: number;
  promptTokens: number;
  continuationTokens: number;
  pairPrompts: number;
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
  const rows = shuffled(encodeSentences(corpus.train, vocab, modelShape.n_positions), 1);
  for (let i = 0; i < s.sftSteps; i++) {
    const start = (i * s.sftBatch) % Math.max(1, rows.length - s.sftBatch);
    const stats = await step.accumulate(sftBatch(rows.slice(start, start + s.sftBatch), vocab.eosId));
    // Linear warm-up then constant: a short, stable schedule for a model trained from scratch.
    await step.apply(2e-3 * Math.min(1, (i + 1) / 50), 1);
    progress(i + 1, s.sftSteps, stats.loss);
  }
  mkdirSync(dir, { recursive: true });
  await model.save(out);
  model.dispose();
  return out;
}

export interface PromptSet {
  /** Held-out prompts: EOS + the first promptTokens tokens of a held-out sentence. */
  prompts: number[][];
}

export function heldOutPrompts(corpus: Corpus, vocab: NarrowVocab, promptTokens: number, offset: number, count: number): number[][] {
  const out: number[][] = [];
  for (const s of corpus.heldOut.slice(offset)) {
    const ids = vocab.encode(s);
    if (!ids || ids.length <= promptTokens + 1) continue;
    out.push([vocab.eosId, ...ids.subarray(0, promptTokens)]);
    if (out.length === count) break;
  }
  return out;
}

/** Continuations without a trailing EOS, and their text. */
export function continuationText(ids: Int32Array, vocab: NarrowVocab): { ids: number[]; text: string } {
  const list = Array.from(ids);
  const end = list.indexOf(vocab.eosId);
  const body = end < 0 ? list : list.slice(0, end);
  return { ids: body, text: vocab.decode(body) };
}

export interface PairStats {
  pairs: number;
  ties: number;
  prompts: number;
}

/** Stage 3: two πref samples per prompt; the more positive continuation is chosen; ties dropped. */
export async function samplePairs(
  dir: string,
  refDir: string,
  corpus: Corpus,
  vocab: NarrowVocab,
  s: DemoSettings,
  progress: (done: number, total: number) => void = () => {},
): Promise<PairStats> {
  const file = path.join(dir, 'pairs.jsonl');
  const statsFile = path.join(dir, 'pairs-stats.json');
  if (existsSync(file) && existsSync(statsFile)) return JSON.parse(readFileSync(statsFile, 'utf8')) as PairStats;
  const ref = await Model.load(refDir);
  const prompts = heldOutPrompts(corpus, vocab, s.promptTokens, s.evalPrompts + s.evalPairs, s.pairPrompts);
  const lines: string[] = [];
  let ties = 0;
  for (let i = 0; i < prompts.length; i += 64) {
    const chunk = prompts.slice(i, i + 64);
    const batch = [...chunk, ...chunk].map((p) => Int32Array.from(p));
    const outs = await ref.generate(batch, { maxNewTokens: s.continuationTokens, temperature: 1, seed: 7 + i, eosTokenId: vocab.eosId });
    chunk.forEach((p, j) => {
      const a = continuationText(outs[j], vocab);
      const b = continuationText(outs[j + chunk.length], vocab);
      if (a.ids.length === 0 || b.ids.length === 0) return void ties++;
      const ra = sentimentScore(a.text);
      const rb = sentimentScore(b.text);
      if (ra === rb) return void ties++;
      const [chosen, rejected] = ra > rb ? [a, b] : [b, a];
      lines.push(JSON.stringify({ prompt_ids: p, chosen_ids: chosen.ids, rejected_ids: rejected.ids }));
    });
    progress(Math.min(i + 64, prompts.length), prompts.length);
  }
  ref.dispose();
  const stats: PairStats = { pairs: lines.length, ties, prompts: prompts.length };
  writeFileSync(file, `${lines.join('\n')}\n`);
  writeFileSync(statsFile, `${JSON.stringify(stats)}\n`);
  return stats;
}
