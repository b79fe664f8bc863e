// The comparison: DPO, TDPO1 and TDPO2 (two alphas) trained from πref on the same pairs, with the
// same seeds and budget, evaluated at fixed steps on held-out prompts and held-out pairs.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { collatePairs, tokenizePair, type TokenizedPair } from '../data/tokenize.js';
import { tdpoLossSync } from '../loss.js';
import { Model } from '../model.js';
import { stepMetrics } from '../train/metrics.js';
import { TrainStep } from '../train/train-step.js';
import type { Corpus } from './corpus.js';
import { sentimentScore } from './reward.js';
import { continuationText, heldOutPrompts, lengthBatches, modelShape, type DemoSettings } from './stages.js';
import type { NarrowVocab } from './vocab.js';

export interface EvalPoint {
  method: string;
  seed: number;
  step: number;
  /** Mean sentiment of continuations sampled from the policy on held-out prompts. */
  reward: number;
  /** Mean sequence KL(πref ‖ πθ) over those sampled continuations. */
  sampleKl: number;
  /** Mean per-token entropy of the policy over those continuations (diversity). */
  entropy: number;
  /** On the held-out pairs: implicit-reward accuracy (a tie counts as wrong), the mean implicit-reward
   * margin β·(log-ratio of chosen − log-ratio of rejected), and sequence KL of each side. */
  accuracy: number;
  rewardMargin: number;
  klChosen: number;
  klRejected: number;
  klMargin: number;
}

/** Sequence KL(ref ‖ policy) and mean policy entropy over each row's continuation tokens. */
async function sampleStats(policy: Model, reference: Model, prompts: number[][], conts: number[][], eos: number) {
  const rows = prompts.map((p, i) => [...p, ...conts[i]]);
  const B = rows.length;
  const T = Math.max(...rows.map((r) => r.length));
  const ids = new Int32Array(B * T).fill(eos);
  const labels = new Int32Array(B * T).fill(-100);
  const mask = new Int32Array(B * T);
  rows.forEach((r, b) => {
    ids.set(r, b * T);
    mask.fill(1, b * T, b * T + r.length);
    // logits at t score token t + 1: the continuation's tokens, scored from the prompt's last one.
    for (let t = prompts[b].length - 1; t < r.length - 1; t++) labels[b * T + t] = r[t + 1];
  });
  const pol = await policy.forward(ids, [B, T], { attentionMask: mask });
  const ref = await reference.forward(ids, [B, T], { attentionMask: mask });
  const V = pol.shape[2];
  // The loss kernel's per-row sequence KL: rows 0..B/2-1 come back as "chosen", the rest "rejected".
  const stats = tdpoLossSync({ policyLogits: pol.logits, referenceLogits: ref.logits, labels, shape: [B, T, V] });
  const kl = [...stats.chosenKl, ...stats.rejectedKl];
  let entropy = 0;
  let positions = 0;
  for (let i = 0; i < B * T; i++) {
    if (labels[i] === -100) continue;
    const z = pol.logits.subarray(i * V, (i + 1) * V);
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, z[v]);
    let sum = 0;
    let dot = 0;
    for (let v = 0; v < V; v++) {
      const e = Math.exp(z[v] - max);
      sum += e;
      dot += e * (z[v] - max);
    }
    entropy += Math.log(sum) - dot / sum;
    positions++;
  }
  return { kl: kl.reduce((a, b) => a + b, 0) / B, entropy: positions ? entropy / positions : 0 };
}

export interface Experiment {
  points: EvalPoint[];
  trainPairs: number;
  evalPairs: number;
}

type Point = Omit<EvalPoint, 'method' | 'seed'>;
const pairLength = (p: TokenizedPair) => Math.max(p.chosen.inputIds.length, p.rejected.inputIds.length);

export async function runExperiment(
  dir: string,
  refDir: string,
  corpus: Corpus,
  vocab: NarrowVocab,
  s: DemoSettings,
  progress: (msg: string, fraction: number) => void,
): Promise<Experiment> {
  const lines = readFileSync(path.join(dir, 'pairs.jsonl'), 'utf8').trim().split('\n').filter(Boolean);
  const o = { maxLength: modelShape.n_positions, maxPromptLength: 16, truncationMode: 'keep_start' as const };
  const all: TokenizedPair[] = lines.map((l) => {
    const p = JSON.parse(l) as { prompt_ids: number[]; chosen_ids: number[]; rejected_ids: number[] };
    return tokenizePair(p.prompt_ids, p.chosen_ids, p.rejected_ids, vocab.eosId, o);
  });
  const evalSet = all.slice(0, s.evalPairs);
  const trainSet = all.slice(s.evalPairs);
  // Held-out pairs in batches of similar length: the same statistics, less padding to compute.
  const evalBatches = lengthBatches(evalSet, pairLength, 64, 0).map((b) => collatePairs(b, vocab.eosId));
  const prompts = heldOutPrompts(corpus, vocab, s.promptTokens, s.evalPrompts);
  const reference = await Model.load(refDir);
  const points: EvalPoint[] = [];
  const runs = s.methods.length * s.seeds.length;
  let run = 0;
  for (const seed of s.seeds) {
    // At step 0 every method is πref itself, with the same sampling seed: evaluated once per seed.
    let atStart: Point | undefined;
    for (const m of s.methods) {
      const policy = await Model.load(refDir);
      const step = await TrainStep.create(policy, { loss: m.loss, beta: s.beta, alpha: m.alpha, optimizer: 'rmsprop', reference });
      const evaluate = async (at: number): Promise<Point> => {
        // Fixed-length samples, as the pairs' (pairs.ts).
        const samples = await policy.generate(prompts.map((p) => Int32Array.from(p)), { maxNewTokens: s.continuationTokens, temperature: 1, seed: 1000 * seed + at });
        const conts = samples.map((x) => Array.from(x));
        const texts = samples.map((x) => continuationText(x, vocab).text);
        const { kl, entropy } = await sampleStats(policy, reference, prompts, conts, vocab.eosId);
        const micro = [];
        for (const b of evalBatches) micro.push(await step.evaluate(b));
        const heldOut = stepMetrics(micro, false);
        return {
          step: at,
          reward: texts.reduce((a, t) => a + sentimentScore(t), 0) / texts.length,
          sampleKl: kl,
          entropy,
          accuracy: heldOut['rewards/accuracies'],
          rewardMargin: heldOut['rewards/margins'],
          klChosen: heldOut['kl/chosen'],
          klRejected: heldOut['kl/rejected'],
          klMargin: heldOut['kl/margin'],
        };
      };
      atStart ??= await evaluate(0);
      points.push({ method: m.name, seed, ...atStart });
      const perEpoch = Math.ceil(trainSet.length / s.trainBatch);
      let batches: TokenizedPair[][] = [];
      for (let i = 0; i < s.trainSteps; i++) {
        // Every pass over the training pairs draws new batches (of similar length, see lengthBatches).
        if (i % perEpoch === 0) batches = lengthBatches(trainSet, pairLength, s.trainBatch, 1000 * seed + i);
        await step.accumulate(collatePairs(batches[i % perEpoch], vocab.eosId));
        await step.apply(s.lr * Math.min(1, (i + 1) / 6), 10);
        if ((i + 1) % s.evalEvery === 0) points.push({ method: m.name, seed, ...(await evaluate(i + 1)) });
        progress(`${m.name}, seed ${seed}: step ${i + 1}/${s.trainSteps}`, (run + (i + 1) / s.trainSteps) / runs);
      }
      run++;
      policy.dispose();
    }
  }
  reference.dispose();
  return { points, trainPairs: trainSet.length, evalPairs: evalSet.length };
}
