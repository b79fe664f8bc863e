// The comparison: DPO, TDPO1 and TDPO2 (two alphas) trained from πref on each seed's pairs, with
// the same seeds and budget, each run by train() as a user would run it (held-out pair metrics by its
// eval_every, a checkpoint at each evaluation step), then the checkpoints evaluated on held-out
// prompts: samples, their reward, their KL from πref and the policy's entropy.
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { collatePairs, evaluate, loadConfig, Model, train, TrainStep, type Metrics, type TokenizedPair, type TrainConfig } from '../index.js';
import type { Corpus } from './corpus.js';
import { sentimentScore } from './reward.js';
import { continuationText, heldOutPrompts, modelShape, pairFiles, writeStageFile, type DemoSettings } from './stages.js';
import { meanSe, meanWithSe } from './stats.js';
import type { NarrowVocab } from './vocab.js';

export interface EvalPoint {
  method: string;
  seed: number;
  step: number;
  /** Mean sentiment of continuations sampled from the policy on held-out prompts. */
  reward: number;
  /** The standard error of that mean: the samples' standard deviation over √samples. */
  rewardSe: number;
  /**
   * Each sample's reward, in row order. Every checkpoint of a seed samples its rows from one random
   * stream, so two checkpoints' rewards pair up row by row (pairedDifference).
   */
  sampleRewards?: number[];
  /** Mean sequence KL(πref ‖ πθ) over those sampled continuations: the paper's forward KL, the x axis of its Figure 6(a). */
  sampleKl: number;
  /**
   * Mean over those samples of log πθ(y|x) − log πref(y|x) over the continuation: an unbiased
   * estimate of the sequence KL(πθ ‖ πref), since the samples come from πθ at temperature 1. The
   * reverse KL of the paper's Eq. 1 and the x axis of its Figure 3(a).
   */
  sampleReverseKl: number;
  /** The standard error of that mean over the samples. */
  sampleReverseKlSe: number;
  /** Mean per-token entropy of the policy over those continuations (diversity). */
  entropy: number;
  /** On the held-out pairs: implicit-reward accuracy (a tie counts as wrong), the mean implicit-reward
   * margin β·(log-ratio of chosen − log-ratio of rejected), and sequence KL of each side. */
  accuracy: number;
  rewardMargin: number;
  klChosen: number;
  klRejected: number;
  klMargin: number;
  /**
   * The standard error of klMargin: klMargin is |mean over the held-out pairs of (KL rejected − KL
   * chosen)|, and this is that mean's error over the pairs. Zero at step 0.
   */
  klMarginSe?: number;
}

/**
 * Mean sequence KL(πref ‖ πθ), each row's log-ratio log πθ(y|x) − log πref(y|x) (in row order), and
 * mean per-token policy entropy over each row's continuation, all from the train step's own
 * per-sequence statistics (one forward of each model): each sample goes
 * in as one side of a pair (prompt, then the continuation as the response, without the EOS a
 * training pair appends), collated as training pairs are. The scored positions are those the
 * continuation was drawn from: the prompt's last to the row's second-to-last.
 */
export async function sampleStats(policy: Model, reference: Model, prompts: number[][], conts: number[][], eos: number) {
  const rows = prompts.map((p, i) => ({ inputIds: [...p, ...conts[i]], labels: [...p.map(() => -100), ...conts[i]] }));
  const B = rows.length;
  if (B % 2) throw new RangeError(`sampleStats needs an even number of prompts, got ${B}`);
  const pairs: TokenizedPair[] = rows.slice(0, B / 2).map((chosen, i) => ({ chosen, rejected: rows[B / 2 + i] }));
  // DPO at β = 1: each side's reward is then its log-ratio (the KL and entropy are computed alike for every loss).
  const step = await TrainStep.create(policy, { loss: 'dpo', beta: 1, reference });
  const stats = await step.evaluate(collatePairs(pairs, eos));
  const sum = (xs: ArrayLike<number>) => Array.from(xs).reduce((a, x) => a + x, 0);
  const positions = sum(conts.map((c) => c.length));
  const entropy = sum(stats.chosenEntropy) + sum(stats.rejectedEntropy);
  return {
    kl: (sum(stats.chosenKl) + sum(stats.rejectedKl)) / B,
    logratios: [...stats.chosenRewards, ...stats.rejectedRewards],
    entropy: positions ? entropy / positions : 0,
  };
}

export interface Experiment {
  points: EvalPoint[];
  /** Each seed's pairs to train on, in the order of the settings' seeds. */
  trainPairs: number[];
  /** Held-out pairs per seed (every seed holds out as many). */
  evalPairs: number;
}

type Point = Omit<EvalPoint, 'method' | 'seed'>;

/** A run's folder name: "TDPO2 α=0.5", seed 2 → "tdpo2-a0.5-seed2". */
const runName = (method: string, seed: number) => `${method.toLowerCase().replace(/α=/g, 'a').replace(/[^a-z0-9.]+/g, '-')}-seed${seed}`;

/** A seed's pairs split for train(): the first evalPairs held out, the rest to train on. */
const splitFiles = (dir: string, seed: number) => ({ train: path.join(dir, `pairs-seed${seed}-train.jsonl`), eval: path.join(dir, `pairs-seed${seed}-eval.jsonl`) });

/** The train() config of one method and seed: the paper's recipe at the demo's scale. */
function runConfig(dir: string, refDir: string, s: DemoSettings, m: DemoSettings['methods'][number], seed: number): TrainConfig {
  return loadConfig(null, [], {
    model: refDir,
    reference: refDir,
    data: { ...splitFiles(dir, seed), format: 'tokenized', eval_size: 0, skip_invalid: false, drop_last: true, group_by_length: true },
    loss: { name: m.loss, alpha: m.alpha, beta: s.beta },
    optimizer: 'rmsprop',
    lr: s.lr,
    warmup_steps: 5,
    max_grad_norm: 10,
    batch_size: s.trainBatch,
    max_steps: s.trainSteps,
    max_length: modelShape.n_positions,
    max_prompt_length: 16,
    truncation_mode: 'keep_start',
    seed: 1000 * seed,
    eval_every: s.evalEvery,
    save_every: s.evalEvery,
    output_dir: path.join(dir, 'runs', runName(m.name, seed)),
  });
}

/** Held-out pair metrics as the report names them, from train()'s or evaluate()'s eval/ figures. */
const heldOutOf = (m: Metrics) => ({
  accuracy: m['eval/rewards/accuracies'],
  rewardMargin: m['eval/rewards/margins'],
  klChosen: m['eval/kl/chosen'],
  klRejected: m['eval/kl/rejected'],
  klMargin: m['eval/kl/margin'],
  klMarginSe: m['eval/kl/margin_se'],
});

export async function runExperiment(
  dir: string,
  refDir: string,
  corpus: Corpus,
  vocab: NarrowVocab,
  s: DemoSettings,
  progress: (msg: string, fraction: number) => void,
): Promise<Experiment> {
  // Each seed's pairs (pairs.ts): the first evalPairs are held out; train() reads each part as its own file.
  const trainPairs = s.seeds.map((seed) => {
    const lines = readFileSync(pairFiles(dir, seed).pairs, 'utf8').trim().split('\n').filter(Boolean);
    if (lines.length <= s.evalPairs) throw Object.assign(new Error(`seed ${seed}: ${lines.length} pairs leave none to train on after ${s.evalPairs} held out`), { code: 'ERR_TDPO_DEMO_PAIRS' });
    const files = splitFiles(dir, seed);
    writeFileSync(files.eval, `${lines.slice(0, s.evalPairs).join('\n')}\n`);
    writeFileSync(files.train, `${lines.slice(s.evalPairs).join('\n')}\n`);
    return lines.length - s.evalPairs;
  });
  const prompts = heldOutPrompts(corpus, vocab, s.promptTokens, s.evalPrompts);
  const reference = await Model.load(refDir);
  // Samples of a checkpoint: fixed-length, as the pairs' (pairs.ts), samplesPerEvalPrompt per
  // prompt. Every checkpoint of a seed (each method, each step, and πref) draws from the same
  // random stream (common random numbers), and the report's reward differences are taken over these
  // paired samples. The pairing couples little (rewards of two checkpoints correlated −0.01 to 0.13
  // in the 16:32 UTC run: their tokens part within a few steps), but it costs nothing.
  const rows = Array.from({ length: s.samplesPerEvalPrompt }, () => prompts).flat();
  const rowIds = rows.map((p) => Int32Array.from(p));
  const sampled = async (policy: Model, seed: number) => {
    const samples = await policy.generate(rowIds, { maxNewTokens: s.continuationTokens, temperature: 1, seed: 1000 * seed });
    const rewards = samples.map((x) => sentimentScore(continuationText(x, vocab).text));
    const { kl, logratios, entropy } = await sampleStats(policy, reference, rows, samples.map((x) => Array.from(x)), vocab.eosId);
    const reverse = meanSe(logratios);
    return { ...meanWithSe(rewards), sampleRewards: rewards, sampleKl: kl, sampleReverseKl: reverse.mean, sampleReverseKlSe: reverse.se, entropy };
  };
  const points: EvalPoint[] = [];
  const runs = s.methods.length * s.seeds.length;
  let run = 0;
  for (const seed of s.seeds) {
    // At step 0 every method is πref itself, with the same sampling seed: evaluated once per seed.
    let atStart: Point | undefined;
    for (const m of s.methods) {
      const config = runConfig(dir, refDir, s, m, seed);
      const out = config.output_dir;
      const pointsFile = path.join(out, 'points.json');
      if (existsSync(pointsFile)) {
        points.push(...(JSON.parse(readFileSync(pointsFile, 'utf8')) as EvalPoint[]));
        progress(`${m.name}, seed ${seed}: reused`, ++run / runs);
        continue;
      }
      if (!atStart) {
        const start = await Model.load(refDir);
        atStart = { step: 0, ...(await sampled(start, seed)), ...heldOutOf(await evaluate(config, refDir)) };
        start.dispose();
      }
      const own: EvalPoint[] = [{ method: m.name, seed, ...atStart }];
      await train(config, {
        resume: true,
        onStep: (x) => {
          if (typeof x.loss === 'number') progress(`${m.name}, seed ${seed}: step ${x.step}/${s.trainSteps}`, (run + x.step / s.trainSteps) / runs);
        },
      });
      // Held-out pair metrics as train() logged them; samples from the checkpoint of each step.
      const logged = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Metrics);
      for (let at = s.evalEvery; at <= s.trainSteps; at += s.evalEvery) {
        const atStep = logged.find((x) => x.step === at && 'eval/loss' in x);
        if (!atStep) throw new Error(`${out}/metrics.jsonl has no evaluation at step ${at}`);
        const policy = await Model.load(path.join(out, at === s.trainSteps ? 'final' : `step-${at}`));
        own.push({ method: m.name, seed, step: at, ...(await sampled(policy, seed)), ...heldOutOf(atStep) });
        policy.dispose();
      }
      // points.json says the run is finished: reused as it is on a rerun.
      writeStageFile(pointsFile, `${JSON.stringify(own)}\n`);
      // The evaluated checkpoints are not needed again; the final policy stays.
      for (const name of readdirSync(out)) if (/^step-\d+$/.test(name)) rmSync(path.join(out, name), { recursive: true, force: true });
      rmSync(path.join(out, 'final', 'optimizer.pt'), { force: true });
      points.push(...own);
      run++;
    }
  }
  reference.dispose();
  return { points, trainPairs, evalPairs: s.evalPairs };
}
