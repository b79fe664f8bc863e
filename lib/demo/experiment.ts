// The comparison: DPO, TDPO1 and TDPO2 (two alphas) trained from πref on the same pairs, with the
// same seed and budget, evaluated at fixed steps on held-out prompts and pairs.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { collatePairs, tokenizePair, type TokenizedPair } from '../data/tokenize.js';
import { shuffled } from '../data/preferences.js';
import { tdpoLossSync } from '../loss.js';
import { Model } from '../model.js';
import { stepMetrics } from '../train/metrics.js';
import { TrainStep } from '../train/train-step.js';
import type { Corpus } from './corpus.js';
import { sentimentScore } from './reward.js';
import { continuationText, heldOutPrompts, modelShape, type DemoSettings } from './stages.js';
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
  /** Implicit-reward accuracy and sequence KL on held-out preference pairs. */
  accuracy: number;
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
  const prompts = heldOutPrompts(corpus, vocab, s.promptTokens, 0, s.evalPrompts);
  const reference = await Model.load(refDir);
  const points: EvalPoint[] = [];
  const runs = s.methods.length * s.seeds.length;
  let run = 0;
  for (const seed of s.seeds) {
    for (const m of s.methods) {
      const policy = await Model.load(refDir);
      const step = await TrainStep.create(policy, { loss: m.loss, beta: s.beta, alpha: m.alpha, optimizer: 'rmsprop', reference });
      const order = shuffled(trainSet, seed);
      const evaluate = async (at: number) => {
        const samples = await policy.generate(prompts.map((p) => Int32Array.from(p)), {
          maxNewTokens: s.continuationTokens,
          temperature: 1,
          seed: 1000 * seed + at,
          eosTokenId: vocab.eosId,
        });
        // Continuations keep their EOS for the KL (ending is a choice the model makes).
        const conts = samples.map((x) => Array.from(x));
        const texts = samples.map((x) => continuationText(x, vocab).text);
        const { kl, entropy } = await sampleStats(policy, reference, prompts, conts, vocab.eosId);
        const heldOut = stepMetrics([await step.evaluate(collatePairs(evalSet, vocab.eosId))], false);
        points.push({
          method: m.name,
          seed,
          step: at,
          reward: texts.reduce((a, t) => a + sentimentScore(t), 0) / texts.length,
          sampleKl: kl,
          entropy,
          accuracy: heldOut['rewards/accuracies'],
          klChosen: heldOut['kl/chosen'],
          klRejected: heldOut['kl/rejected'],
          klMargin: heldOut['kl/margin'],
        });
      };
      await evaluate(0);
      for (let i = 0; i < s.trainSteps; i++) {
        const start = (i * s.trainBatch) % Math.max(1, order.length - s.trainBatch);
        await step.accumulate(collatePairs(order.slice(start, start + s.trainBatch), vocab.eosId));
        await step.apply(s.lr * Math.min(1, (i + 1) / 6), 10);
        if ((i + 1) % s.evalEvery === 0) await evaluate(i + 1);
        progress(`${m.name}, seed ${seed}: step ${i + 1}/${s.trainSteps}`, (run + (i + 1) / s.trainSteps) / runs);
      }
      run++;
      policy.dispose();
    }
  }
  reference.dispose();
  return { points, trainPairs: trainSet.length, evalPairs: evalSet.length };
}
