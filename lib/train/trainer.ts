// The training loop. TypeScript decides what runs (data order, micro-batches, the learning rate of
// each update, evaluation, checkpoints); the native TrainStep does the tensor work.
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { TrainConfig } from '../config.js';
import { collatePairs, tokenizePair, type TokenizedPair } from '../data/tokenize.js';
import { readPreferences, shuffled, type RawPair } from '../data/preferences.js';
import { codedError } from '../errors.js';
import { Model } from '../model.js';
import { setNumThreads } from '../runtime.js';
import { Tokenizer } from '../tokenizer.js';
import { latestCheckpoint, saveCheckpoint, type TrainerState } from './checkpoint.js';
import { stepMetrics, type Metrics } from './metrics.js';
import { TrainStep, type MicroStats } from './train-step.js';

export interface TrainOptions {
  /** Called after every optimizer step with that step's metrics (and after each evaluation). */
  onStep?: (metrics: Metrics) => void;
  /** Aborting stops at the next step boundary, after writing a checkpoint. */
  signal?: AbortSignal;
  /** Continue from the newest complete checkpoint in output_dir. */
  resume?: boolean;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export interface TrainResult {
  steps: number;
  examples: number;
  /** The folder holding the final policy (final/, or the checkpoint written when stopped). */
  outputDir: string;
  stopped: boolean;
  skippedLines: number;
  lastMetrics: Metrics | null;
}

async function loadModel(spec: TrainConfig['model'], c: TrainConfig): Promise<Model> {
  return typeof spec === 'string'
    ? Model.load(spec, { dtype: c.dtype })
    : Model.create(spec, { seed: c.seed, dtype: c.dtype });
}

function loadTokenizer(c: TrainConfig): Tokenizer {
  if (c.tokenizer === 'gpt2') return Tokenizer.gpt2();
  if (c.tokenizer) return Tokenizer.fromFile(c.tokenizer);
  if (typeof c.model === 'string' && existsSync(path.join(c.model, 'tokenizer.json'))) {
    return Tokenizer.fromFile(path.join(c.model, 'tokenizer.json'));
  }
  throw codedError('RangeError', 'ERR_TDPO_CONFIG', "tokenizer: no tokenizer.json beside the model; set tokenizer to a file or 'gpt2'");
}

function eosOf(c: TrainConfig, policy: Model, tokenizer: Tokenizer | null): number {
  const fromConfig = policy.config.eos_token_id;
  if (Number.isSafeInteger(fromConfig)) return fromConfig as number;
  if (tokenizer?.eosTokenId !== undefined) return tokenizer.eosTokenId;
  throw codedError('RangeError', 'ERR_TDPO_CONFIG', 'the model config has no eos_token_id and the tokenizer no end-of-text token');
}

function tokenizeAll(raw: RawPair[], c: TrainConfig, tokenizer: Tokenizer | null, eos: number): TokenizedPair[] {
  const mode = c.truncation_mode ?? (c.data.format === 'hh' ? 'keep_end' : 'keep_start');
  const o = { maxLength: c.max_length, maxPromptLength: c.max_prompt_length, truncationMode: mode } as const;
  return raw.map((p) =>
    'promptIds' in p
      ? tokenizePair(p.promptIds, p.chosenIds, p.rejectedIds, eos, o)
      : tokenizePair(tokenizer!.encode(p.prompt), tokenizer!.encode(p.chosen), tokenizer!.encode(p.rejected), eos, o),
  );
}

/** For SFT: the chosen rows only (prompt + chosen response, prompt labels -100). */
function sftBatch(pairs: TokenizedPair[]) {
  const full = collatePairs(pairs);
  const [B, T] = full.shape;
  const half = (B / 2) * T;
  return {
    inputIds: full.inputIds.slice(0, half),
    labels: full.labels.slice(0, half),
    attentionMask: full.attentionMask!.slice(0, half),
    shape: [B / 2, T] as const,
  };
}

/** Reads the data and holds out the eval split (data.eval, or eval_size pairs of data.train). */
async function loadData(c: TrainConfig, forEval = false) {
  const train = await readPreferences(c.data.train, c.data.format, c.data.skip_invalid);
  let trainRaw = shuffled(train.pairs, c.seed);
  let evalRaw: RawPair[] = [];
  let skippedLines = train.skipped.length;
  if (c.data.eval) {
    const ev = await readPreferences(c.data.eval, c.data.format, c.data.skip_invalid);
    evalRaw = ev.pairs;
    skippedLines += ev.skipped.length;
  } else if (c.data.eval_size > 0 && (c.eval_every > 0 || forEval)) {
    const n = c.data.eval_size < 1 ? Math.floor(trainRaw.length * c.data.eval_size) : Math.min(c.data.eval_size, trainRaw.length - 1);
    evalRaw = trainRaw.slice(0, n);
    trainRaw = trainRaw.slice(n);
  }
  return { trainRaw, evalRaw, skippedLines };
}

async function evalStats(step: TrainStep, pairs: TokenizedPair[], micro: number, sft: boolean): Promise<Metrics> {
  const stats: MicroStats[] = [];
  for (let i = 0; i < pairs.length; i += micro) {
    const part = pairs.slice(i, i + micro);
    stats.push(await step.evaluate(sft ? sftBatch(part) : collatePairs(part)));
  }
  return stepMetrics(stats, sft);
}

/** Eval metrics of the policy in `modelDir` against the config's reference, without training. */
export async function evaluateOnly(c: TrainConfig, modelDir: string): Promise<Metrics> {
  if (c.threads) setNumThreads(c.threads);
  const sft = c.loss.name === 'sft';
  const { evalRaw } = await loadData(c, true);
  if (evalRaw.length === 0) throw codedError('RangeError', 'ERR_TDPO_DATA', 'no eval pairs: set data.eval or data.eval_size');
  const policy = await Model.load(modelDir, { dtype: c.dtype });
  const reference = sft ? null : c.reference ? await Model.load(c.reference, { dtype: c.dtype }) : await loadModel(c.model, c);
  try {
    const tokenizer = c.data.format !== 'tokenized' ? loadTokenizer(c) : null;
    const pairs = tokenizeAll(evalRaw, c, tokenizer, eosOf(c, policy, tokenizer));
    const step = await TrainStep.create(policy, { loss: c.loss.name, beta: c.loss.beta, alpha: c.loss.alpha, reference: reference ?? undefined });
    const m = await evalStats(step, pairs, c.batch_size / c.gradient_accumulation_steps, sft);
    const out: Metrics = { pairs: pairs.length };
    for (const [k, v] of Object.entries(m)) out[`eval/${k}`] = v;
    return out;
  } finally {
    policy.dispose();
    reference?.dispose();
  }
}

export async function train(c: TrainConfig, options: TrainOptions = {}): Promise<TrainResult> {
  const log = options.log ?? (() => {});
  if (c.threads) setNumThreads(c.threads);
  const out = c.output_dir;
  mkdirSync(out, { recursive: true });
  writeFileSync(path.join(out, 'config.json'), `${JSON.stringify(c, null, 2)}\n`);
  const sft = c.loss.name === 'sft';
  const { trainRaw, evalRaw, skippedLines } = await loadData(c);
  if (skippedLines) log(`skipped ${skippedLines} invalid lines (data.skip_invalid)`);

  // Models: the starting policy (or the checkpoint's), and the reference.
  const resumeFrom = options.resume ? latestCheckpoint(out) : null;
  const policy = resumeFrom ? await Model.load(resumeFrom.dir, { dtype: c.dtype }) : await loadModel(c.model, c);
  const needsText = c.data.format !== 'tokenized';
  const tokenizer = needsText ? loadTokenizer(c) : null;
  const eos = eosOf(c, policy, tokenizer);
  const trainPairs = tokenizeAll(trainRaw, c, tokenizer, eos);
  const evalPairs = tokenizeAll(evalRaw, c, tokenizer, eos);
  const batchesPerEpoch = c.data.drop_last ? Math.floor(trainPairs.length / c.batch_size) : Math.ceil(trainPairs.length / c.batch_size);
  if (batchesPerEpoch === 0) {
    throw codedError('RangeError', 'ERR_TDPO_DATA', `${trainPairs.length} training pairs make no batch of batch_size ${c.batch_size}`);
  }
  const totalSteps = c.max_steps ?? c.n_epochs * batchesPerEpoch;
  // A reference given by path, or the *starting* policy loaded again (also on resume, when the
  // policy comes from a checkpoint); kept as a Model so that samples can come from it too.
  const reference = sft ? null : c.reference ? await Model.load(c.reference, { dtype: c.dtype }) : await loadModel(c.model, c);
  const step = await TrainStep.create(policy, { loss: c.loss.name, beta: c.loss.beta, alpha: c.loss.alpha, optimizer: c.optimizer, reference: reference ?? undefined });
  let state: TrainerState = { step: 0, examples: 0, seed: c.seed, version: 1 };
  const metricsFile = path.join(out, 'metrics.jsonl');
  if (resumeFrom) {
    await step.loadOptimizer(path.join(resumeFrom.dir, 'optimizer.pt'));
    state = resumeFrom.state;
    // Drop metrics an interrupted run wrote after this checkpoint, so the file reads as one run.
    if (existsSync(metricsFile)) {
      const kept = readFileSync(metricsFile, 'utf8').split('\n').filter((l) => l && (JSON.parse(l) as Metrics).step <= state.step);
      writeFileSync(metricsFile, kept.map((l) => `${l}\n`).join(''));
    }
    log(`resuming from ${resumeFrom.dir} (step ${state.step})`);
  } else {
    writeFileSync(metricsFile, '');
  }

  const write = (m: Metrics) => {
    appendFileSync(metricsFile, `${JSON.stringify(m)}\n`);
    options.onStep?.(m);
  };
  const micro = c.batch_size / c.gradient_accumulation_steps;
  const runMicro = (pairs: TokenizedPair[], scale: number): Promise<MicroStats> =>
    step.accumulate(sft ? sftBatch(pairs) : collatePairs(pairs), scale);
  const writeSamples = async () => {
    const prompts = evalPairs.slice(0, c.samples).map((p) => {
      const n = p.chosen.labels.findIndex((l) => l !== -100);
      return Int32Array.from(p.chosen.inputIds.slice(0, n < 0 ? p.chosen.inputIds.length : n));
    });
    if (prompts.length === 0) return;
    const maxPositions = Number(policy.config.n_positions ?? policy.config.max_position_embeddings);
    const room = Math.min(c.sample_max_new_tokens, maxPositions - Math.max(...prompts.map((p) => p.length)));
    if (room < 1) return;
    // Seeded by the step, so a resumed run samples what an uninterrupted one would.
    const opts = { maxNewTokens: room, temperature: 1, seed: c.seed + state.step, eosTokenId: eos };
    const fromPolicy = await policy.generate(prompts, opts);
    const fromReference = reference ? await reference.generate(prompts, opts) : null;
    const text = (ids: ArrayLike<number>) => (tokenizer ? tokenizer.decode(ids) : Array.from(ids));
    const lines = prompts.map((p, i) =>
      JSON.stringify({ step: state.step, prompt: text(p), policy: text(fromPolicy[i]), ...(fromReference ? { reference: text(fromReference[i]) } : {}) }),
    );
    appendFileSync(path.join(out, 'samples.jsonl'), `${lines.join('\n')}\n`);
  };
  const evaluate = async () => {
    const m = await evalStats(step, evalPairs, micro, sft);
    const e: Metrics = { step: state.step };
    for (const [k, v] of Object.entries(m)) e[`eval/${k}`] = v;
    write(e);
    if (c.samples > 0) await writeSamples();
    log(`eval step ${state.step}: loss ${m.loss.toFixed(4)}${sft ? '' : `, reward accuracy ${m['rewards/accuracies'].toFixed(3)}, kl margin ${m['kl/margin'].toFixed(3)}`}`);
  };

  let order: TokenizedPair[] = [];
  let orderEpoch = -1;
  let last: Metrics | null = null;
  let stopped = false;
  const started = Date.now();
  const startStep = state.step;
  while (state.step < totalSteps) {
    if (options.signal?.aborted) {
      stopped = true;
      break;
    }
    const epoch = Math.floor(state.step / batchesPerEpoch);
    if (epoch !== orderEpoch) {
      order = shuffled(trainPairs, c.seed + 1 + epoch);
      orderEpoch = epoch;
    }
    const b = state.step % batchesPerEpoch;
    const pairs = order.slice(b * c.batch_size, (b + 1) * c.batch_size);
    const t0 = Date.now();
    const stats: MicroStats[] = [];
    for (let i = 0; i < pairs.length; i += micro) {
      const part = pairs.slice(i, i + micro);
      stats.push(await runMicro(part, part.length / pairs.length));
    }
    // Linear warm-up from 0, as the official code's LambdaLR: min(1, (step + 1) / (warmup + 1)).
    const lr = c.lr * Math.min(1, (state.step + 1) / (c.warmup_steps + 1));
    const gradNorm = await step.apply(lr, c.max_grad_norm);
    state = { ...state, step: state.step + 1, examples: state.examples + pairs.length };
    last = { ...stepMetrics(stats, sft), grad_norm: gradNorm, lr, examples_per_second: pairs.length / ((Date.now() - t0) / 1e3), step: state.step, examples: state.examples };
    write(last);
    const done = state.step - startStep;
    const eta = ((Date.now() - started) / done) * (totalSteps - state.step);
    log(`step ${state.step}/${totalSteps} loss ${last.loss.toFixed(4)}${sft ? '' : ` acc ${last['rewards/accuracies'].toFixed(2)} kl margin ${last['kl/margin'].toFixed(3)}`} eta ${(eta / 1000).toFixed(0)}s`);
    if (c.eval_every > 0 && evalPairs.length > 0 && state.step % c.eval_every === 0) await evaluate();
    if (c.save_every > 0 && state.step % c.save_every === 0 && state.step < totalSteps) {
      await saveCheckpoint(out, `step-${state.step}`, policy, step, state);
    }
  }
  const finalDir = stopped
    ? await saveCheckpoint(out, `step-${state.step}`, policy, step, state)
    : await saveCheckpoint(out, 'final', policy, step, state);
  log(stopped ? `stopped at step ${state.step}; checkpoint ${finalDir}` : `done: ${finalDir}`);
  policy.dispose();
  reference?.dispose();
  return { steps: state.step, examples: state.examples, outputDir: finalDir, stopped, skippedLines, lastMetrics: last };
}
