// The training loop. TypeScript decides what runs (data order, micro-batches, the learning rate of
// each update, evaluation, checkpoints); the native TrainStep does the tensor work. One training
// holds an output_dir at a time (lock.ts); --resume checks the config and repairs the run's files
// first (resume.ts); a fresh run refuses an output_dir holding an earlier run's checkpoints unless
// told to overwrite it.
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { validateConfig, type TrainConfig } from '../config.js';
import { collatePairs, type TokenizedPair } from '../data/tokenize.js';
import { codedError } from '../errors.js';
import { Model, type ModelDevice, type ModelOptions } from '../model.js';
import { setNumThreads } from '../runtime.js';
import { earlierCheckpoints, earlierRunEntries, foreignRunEntries, recoverCheckpointTemps, removeEarlierRun, resumePoint, saveCheckpoint, type Checkpoint, type TrainerState } from './checkpoint.js';
import { byLength, checkMaxLength, eosOf, epochOrder, loadTokenizer, readData, sftBatch, tokenizeAll, tokenizeAllYielding, vocabSizeOf } from './data.js';
import { acquireLock } from '../io/lock.js';
import { commMetrics, Distributed, onMain, reduceEval, reduceStep, type DistributedOptions } from './distributed.js';
import { type Metrics } from './metrics.js';
import { checkResumeConfig, truncateJsonl, writeFileAtomic, type ConfigChange } from './resume.js';
import { SAMPLES_FILE, writeSamples } from './samples.js';
import { TrainStep, type MicroStats } from './train-step.js';

export interface TrainOptions {
  /** Called after every optimizer step with that step's metrics (and after each evaluation). */
  onStep?: (metrics: Metrics) => void;
  /** Aborting stops at the next step boundary, after writing a checkpoint. */
  signal?: AbortSignal;
  /**
   * Continue from the newest complete checkpoint in output_dir. The config must equal the run's
   * (<output_dir>/config.json) except for `threads`, `output_dir` and the keys in `allowChange`.
   * A run that ended (final/ is its newest checkpoint) is left as it is, unless max_steps or
   * n_epochs was raised (and allowed): then it continues from final/.
   */
  resume?: boolean;
  /** With resume: config keys allowed to differ from the run's (dotted; a section allows its keys). */
  allowChange?: string[];
  /**
   * Start over in an output_dir that holds an earlier run: once the models and data have loaded, its
   * step-N/ and final/ checkpoints, their temporary folders, metrics.jsonl, samples.jsonl and
   * config.json are removed (nothing else in the folder). Without it (and without resume) a
   * training into an output_dir holding checkpoints is refused (ERR_TDPO_CONFIG) before it writes
   * anything. Not with resume.
   */
  overwrite?: boolean;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /**
   * Data-parallel training: this process is one of worldSize ranks (every rank calls train with
   * the same config and data). batch_size stays the global batch; rank 0 writes the run's files.
   * See distributed.ts and the README's "Training on many processes".
   */
  distributed?: DistributedOptions;
}

export interface TrainResult {
  steps: number;
  examples: number;
  /**
   * The folder holding the final policy: final/, or the checkpoint written when stopped; when the
   * stop came before the first step, the checkpoint resumed from, or null on a fresh run.
   */
  outputDir: string | null;
  stopped: boolean;
  skippedLines: number;
  lastMetrics: Metrics | null;
  /** resume found the run complete and changed nothing. */
  alreadyComplete: boolean;
}

/** Where the models live: 'cuda' under a launcher (LOCAL_RANK set) is this worker's own GPU, as torchrun's convention is. */
function modelOptions(c: TrainConfig): ModelOptions & { device: ModelDevice } {
  const local = process.env.LOCAL_RANK;
  const device: ModelDevice = c.device === 'cuda' && local !== undefined && /^\d+$/.test(local) ? `cuda:${Number(local)}` : c.device;
  return { dtype: c.dtype, device, attnImplementation: c.attn_implementation ?? undefined };
}

async function loadModel(spec: TrainConfig['model'], c: TrainConfig): Promise<Model> {
  return typeof spec === 'string'
    ? Model.load(spec, modelOptions(c))
    : Model.create(spec, { seed: c.seed, ...modelOptions(c) });
}

/** The reference given by path, or the *starting* policy loaded again; null for SFT. */
async function loadReference(c: TrainConfig): Promise<Model | null> {
  if (c.loss.name === 'sft') return null;
  return c.reference ? Model.load(c.reference, modelOptions(c)) : loadModel(c.model, c);
}

/** Eval metrics over all `pairs`; with data.group_by_length, batched by length (less padding, the same figures). */
async function evalStats(step: TrainStep, c: TrainConfig, pairs: TokenizedPair[], dist: Distributed | null = null): Promise<Metrics> {
  const sft = c.loss.name === 'sft';
  const micro = c.batch_size / c.gradient_accumulation_steps;
  if (c.data.group_by_length) pairs = byLength(pairs);
  if (dist) pairs = dist.shard(pairs);
  const stats: MicroStats[] = [];
  for (let i = 0; i < pairs.length; i += micro) {
    const part = pairs.slice(i, i + micro);
    stats.push(await step.evaluate(sft ? sftBatch(part) : collatePairs(part)));
  }
  return reduceEval(dist, stats, sft);
}

/** Eval metrics of the policy in `modelDir` against the config's reference, without training. */
export async function evaluate(c: TrainConfig, modelDir: string): Promise<Metrics> {
  validateConfig(c);
  if (typeof modelDir !== 'string') throw codedError('TypeError', 'ERR_TDPO_TYPE', `modelDir must be a string, got ${typeof modelDir}`);
  if (c.threads) setNumThreads(c.threads);
  const { eval: evalRaw } = await readData(c, true);
  if (evalRaw.length === 0) throw codedError('RangeError', 'ERR_TDPO_DATA', 'no eval pairs: set data.eval or data.eval_size');
  const policy = await Model.load(modelDir, modelOptions(c));
  let reference: Model | null = null;
  try {
    reference = await loadReference(c);
    checkMaxLength(c, [['policy', policy], ['reference', reference]]);
    const tokenizer = c.data.format !== 'tokenized' ? loadTokenizer(c) : null;
    const { pairs } = tokenizeAll(evalRaw, c, tokenizer, eosOf(policy, tokenizer), vocabSizeOf(policy));
    const step = await TrainStep.create(policy, { ...stepOptions(c), reference: reference ?? undefined });
    const m = await evalStats(step, c, pairs);
    const out: Metrics = { pairs: pairs.length };
    for (const [k, v] of Object.entries(m)) out[`eval/${k}`] = v;
    return out;
  } finally {
    policy.dispose();
    reference?.dispose();
  }
}

export async function train(c: TrainConfig, options: TrainOptions = {}): Promise<TrainResult> {
  validateConfig(c);
  const log = options.log ?? (() => {});
  if (options.resume && options.overwrite) {
    throw codedError('TypeError', 'ERR_TDPO_OPTION', 'resume and overwrite exclude each other: resume continues the run in output_dir, overwrite removes it and starts over');
  }
  if (c.threads) setNumThreads(c.threads);
  const dist = options.distributed ? await Distributed.start(options.distributed, c, modelOptions(c).device, log) : null;
  try {
    // Rank 0 alone writes output_dir, so it alone holds the lock.
    if (dist && !dist.isMain) return await runFinished(c, options, log, dist);
    try {
      mkdirSync(c.output_dir, { recursive: true });
    } catch (err) {
      throw codedError('Error', 'ERR_TDPO_IO', `cannot create output_dir ${c.output_dir}: ${(err as Error).message}`);
    }
    const lock = acquireLock(c.output_dir, log);
    try {
      return await runFinished(c, options, log, dist);
    } finally {
      lock.release();
    }
  } catch (err) {
    throw dist ? await dist.fail(err) : err;
  } finally {
    await dist?.close();
  }
}

async function runFinished(c: TrainConfig, options: TrainOptions, log: (line: string) => void, dist: Distributed | null): Promise<TrainResult> {
  const result = await run(c, options, log, dist);
  await dist?.finish();
  return result;
}

/** The last training step's metrics in metrics.jsonl, or null. */
/** The config's train-step options (the optimizer is added where the step trains). */
const stepOptions = (c: TrainConfig) => ({
  loss: c.loss.name,
  beta: c.loss.beta,
  alpha: c.loss.alpha,
  fusedLinear: c.loss.fused_linear,
  chunkMb: c.loss.chunk_mb,
  gradientCheckpointing: c.gradient_checkpointing,
});

function lastStepMetrics(file: string): Metrics | null {
  if (!existsSync(file)) return null;
  const lines = readFileSync(file, 'utf8').split('\n').reverse();
  for (const l of lines) {
    try {
      const m = JSON.parse(l) as Metrics;
      if (typeof m.loss === 'number') return m;
    } catch {
      // blank or half-written
    }
  }
  return null;
}

const raisesLength = (changes: ConfigChange[]) => changes.some((ch) => ch.key === 'max_steps' || ch.key === 'n_epochs');

/** Names as messages list them (folders with a slash), the middle of a long list cut. */
const listNames = (names: string[], max = 6) => {
  const shown = names.map((n) => (/^\.?(final|step-\d+)($|\.)/.test(n) ? `${n}/` : n));
  const cut = shown.length > max ? [...shown.slice(0, max - 2), `${shown.length - max + 1} more`, shown[shown.length - 1]] : shown;
  return cut.join(', ');
};

/** A fresh run into an output_dir holding an earlier run's checkpoints is refused, naming them and the ways out. */
function refuseEarlierRun(out: string): void {
  const found = earlierCheckpoints(out);
  if (!found.length) return;
  throw codedError(
    'RangeError',
    'ERR_TDPO_CONFIG',
    `${out} holds the checkpoints of an earlier run (${listNames(found)}): pass --resume to continue that run, or --overwrite to start over, which removes its checkpoints, metrics.jsonl, samples.jsonl and config.json (resume or overwrite in train())`,
  );
}

/** Files a run would overwrite or delete that are not a run's (a model folder as output_dir) are refused. */
function refuseForeignEntries(out: string): void {
  const found = foreignRunEntries(out);
  if (!found.length) return;
  throw codedError('RangeError', 'ERR_TDPO_CONFIG', `${out} holds files a training run would overwrite or delete but did not write: ${found.join(', ')}; train into another output_dir`);
}

/** --overwrite must not remove what the config reads (a model, reference, tokenizer or data file inside the earlier run). */
function checkOverwriteInputs(c: TrainConfig, out: string): void {
  const removed = earlierRunEntries(out).map((n) => path.resolve(out, n));
  const inputs: Array<[string, string | null]> = [
    ['model', typeof c.model === 'string' ? c.model : null],
    ['reference', c.reference],
    ['tokenizer', c.tokenizer === 'gpt2' ? null : c.tokenizer],
    ['data.train', c.data.train],
    ['data.eval', c.data.eval],
  ];
  for (const [key, value] of inputs) {
    if (!value) continue;
    const p = path.resolve(value);
    const hit = removed.find((r) => p === r || p.startsWith(`${r}${path.sep}`));
    if (hit) {
      throw codedError('RangeError', 'ERR_TDPO_CONFIG', `--overwrite would remove ${hit}, which the config reads as ${key} (${value}); copy it out of ${out} first, or train into another output_dir`);
    }
  }
}

async function run(c: TrainConfig, options: TrainOptions, log: (line: string) => void, dist: Distributed | null): Promise<TrainResult> {
  const main = !dist || dist.isMain;
  const out = c.output_dir;
  const metricsFile = path.join(out, 'metrics.jsonl');
  const sft = c.loss.name === 'sft';

  // What to resume from; a changed config is refused before anything is read or written (save for
  // completing a save that was interrupted between its renames, so that the resume point is right).
  // A fresh run into an earlier run's folder is refused before anything is written.
  let from: (Checkpoint & { final: boolean }) | null = null;
  let changes: ConfigChange[] = [];
  // Distributed: rank 0 alone decides (it alone repairs and reads the run's files); all follow it.
  if (main) refuseForeignEntries(out);
  if (options.overwrite && main) checkOverwriteInputs(c, out);
  else if (!options.resume && main) refuseEarlierRun(out);
  if (options.resume && main) {
    recoverCheckpointTemps(out, log);
    from = resumePoint(out);
    if (from) changes = checkResumeConfig(out, c, options.allowChange ?? [], log);
    else log(`--resume: no checkpoint in ${out}; starting at step 0`);
  }
  if (dist) ({ from, changes } = await dist.onMain('plan', () => ({ from, changes })));
  const complete = (cp: Checkpoint): TrainResult => {
    log(`${out} is complete: ${cp.dir} holds step ${cp.state.step}; nothing to do (to train further, raise max_steps and pass --allow-change max_steps)`);
    return { steps: cp.state.step, examples: cp.state.examples, outputDir: cp.dir, stopped: false, skippedLines: 0, lastMetrics: lastStepMetrics(metricsFile), alreadyComplete: true };
  };
  if (from?.final && !raisesLength(changes)) return complete(from);

  // A stop asked for before the first step ends the run without a checkpoint: the policy is the one
  // it started from, and writing it (16 GB for an 8B model in bfloat16) would only delay the stop.
  // Between the phases of the set-up, which a native load cannot be cut short within. One process
  // only: distributed ranks agree on a stop in the step's collective, so they stop after step 1.
  const stopBeforeFirstStep = (): TrainResult | null => {
    if (dist || !options.signal?.aborted) return null;
    log(`stopped before the first step: no checkpoint written${from ? ` (${from.dir} holds step ${from.state.step})` : ''}`);
    return { steps: from?.state.step ?? 0, examples: from?.state.examples ?? 0, outputDir: from?.dir ?? null, stopped: true, skippedLines: 0, lastMetrics: from ? lastStepMetrics(metricsFile) : null, alreadyComplete: false };
  };
  const notStarted = stopBeforeFirstStep();
  if (notStarted) return notStarted;

  // Models first, so that the data can be checked against the vocabulary and positions.
  const policy = from ? await Model.load(from.dir, modelOptions(c)) : await loadModel(c.model, c);
  let reference: Model | null = null;
  try {
    let early = stopBeforeFirstStep();
    if (early) return early;
    // A reference given by path, or the *starting* policy loaded again (also on resume, when the
    // policy comes from a checkpoint); kept as a Model so that samples can come from it too.
    reference = await loadReference(c);
    if ((early = stopBeforeFirstStep())) return early;
    checkMaxLength(c, [['policy', policy], ['reference', reference]]);
    const tokenizer = c.data.format !== 'tokenized' ? loadTokenizer(c) : null;
    const eos = eosOf(policy, tokenizer);
    const data = await readData(c);
    if ((early = stopBeforeFirstStep())) return early;
    const vocab = vocabSizeOf(policy);
    // Yielding, one process only: a stop is then served between chunks rather than after them all.
    const signal = dist ? undefined : options.signal;
    const tr = await tokenizeAllYielding(data.train, c, tokenizer, eos, vocab, signal);
    const ev = tr && (await tokenizeAllYielding(data.eval, c, tokenizer, eos, vocab, signal));
    if (!tr || !ev) return stopBeforeFirstStep()!; // null only once the signal is aborted, on one process
    const trainPairs = tr.pairs;
    const evalPairs = ev.pairs;
    const skippedLines = data.skippedLines + tr.skipped + ev.skipped;
    if (skippedLines) log(`skipped ${skippedLines} invalid lines (data.skip_invalid)`);
    const batchesPerEpoch = c.data.drop_last ? Math.floor(trainPairs.length / c.batch_size) : Math.ceil(trainPairs.length / c.batch_size);
    if (batchesPerEpoch === 0) {
      throw codedError('RangeError', 'ERR_TDPO_DATA', `${trainPairs.length} training pairs make no batch of batch_size ${c.batch_size}`);
    }
    const totalSteps = c.max_steps ?? c.n_epochs * batchesPerEpoch;
    if (from?.final && totalSteps <= from.state.step) return complete(from);

    // From here on the run writes to output_dir (rank 0 alone, when distributed).
    if (options.overwrite && main) {
      const removed = removeEarlierRun(out);
      if (removed.length) log(`--overwrite: removed the earlier run in ${out}: ${listNames(removed, 12)}`);
    }
    if (main) recoverCheckpointTemps(out, log);
    if (main) writeFileAtomic(path.join(out, 'config.json'), `${JSON.stringify(c, null, 2)}\n`);
    const step = await TrainStep.create(policy, { ...stepOptions(c), optimizer: c.optimizer, reference: reference ?? undefined });
    await dist?.attach(step, policy);
    let state: TrainerState = { step: 0, examples: 0, seed: c.seed, version: 1 };
    if (from) {
      const optimizerChange = changes.find((ch) => ch.key === 'optimizer');
      if (optimizerChange) {
        log(`--resume: the optimizer changed (${optimizerChange.from} -> ${optimizerChange.to}): ${c.optimizer} starts with fresh state; ${from.dir}/optimizer.pt is not loaded`);
      } else {
        await step.loadOptimizer(path.join(from.dir, 'optimizer.pt'));
      }
      state = from.state;
      // Drop what an interrupted run wrote after this checkpoint, so each file reads as one run.
      if (main) truncateJsonl(metricsFile, state.step, log);
      if (main) truncateJsonl(path.join(out, SAMPLES_FILE), state.step, log);
      log(`resuming from ${from.dir} (step ${state.step})`);
    } else if (main) {
      writeFileSync(metricsFile, '');
      rmSync(path.join(out, SAMPLES_FILE), { force: true });
    }

    const write = (m: Metrics) => {
      if (main) appendFileSync(metricsFile, `${JSON.stringify(m)}\n`);
      options.onStep?.(m);
    };
    const micro = c.batch_size / c.gradient_accumulation_steps;
    const runMicro = (pairs: TokenizedPair[], scale: number): Promise<MicroStats> =>
      step.accumulate(sft ? sftBatch(pairs) : collatePairs(pairs), scale);
    const evaluate = async () => {
      const m = await evalStats(step, c, evalPairs, dist);
      const e: Metrics = { step: state.step };
      for (const [k, v] of Object.entries(m)) e[`eval/${k}`] = v;
      write(e);
      if (c.samples > 0) await onMain(dist, 'samples', () => writeSamples(c, state.step, evalPairs, { policy, reference, tokenizer, eos }));
      log(`eval step ${state.step}: loss ${m.loss.toFixed(4)}${sft ? '' : `, reward accuracy ${m['rewards/accuracies'].toFixed(3)}, kl margin ${m['kl/margin'].toFixed(3)}`}`);
    };

    let order: TokenizedPair[] = [];
    let orderEpoch = -1;
    let last: Metrics | null = null;
    let stopped = false;
    let stopAll = false; // distributed: some rank was asked to stop (every rank stops after the same step)
    const started = Date.now();
    const startStep = state.step;
    while (state.step < totalSteps) {
      if (dist ? stopAll : options.signal?.aborted) {
        stopped = true;
        break;
      }
      const epoch = Math.floor(state.step / batchesPerEpoch);
      if (epoch !== orderEpoch) {
        order = epochOrder(trainPairs, c, epoch);
        orderEpoch = epoch;
      }
      const b = state.step % batchesPerEpoch;
      const pairs = order.slice(b * c.batch_size, (b + 1) * c.batch_size);
      const t0 = Date.now();
      const comm0 = dist?.stats();
      const stats: MicroStats[] = [];
      // Distributed: this rank's share, weighed by the global batch, so the ranks' sum is its mean.
      const mine = dist ? dist.shard(pairs) : pairs;
      for (let i = 0; i < mine.length; i += micro) {
        const part = mine.slice(i, i + micro);
        stats.push(await runMicro(part, part.length / pairs.length));
      }
      // Linear warm-up from 0, as the official code's LambdaLR: min(1, (step + 1) / (warmup + 1)).
      const lr = c.lr * Math.min(1, (state.step + 1) / (c.warmup_steps + 1));
      const gradNorm = await step.apply(lr, c.max_grad_norm);
      state = { ...state, step: state.step + 1, examples: state.examples + pairs.length };
      const reduced = await reduceStep(dist, stats, sft, options.signal?.aborted ?? false);
      stopAll = reduced.stop;
      last = { ...reduced.metrics, grad_norm: gradNorm, lr, examples_per_second: pairs.length / ((Date.now() - t0) / 1e3), ...commMetrics(comm0, dist), step: state.step, examples: state.examples };
      write(last);
      const done = state.step - startStep;
      const eta = ((Date.now() - started) / done) * (totalSteps - state.step);
      log(`step ${state.step}/${totalSteps} loss ${last.loss.toFixed(4)}${sft ? '' : ` acc ${last['rewards/accuracies'].toFixed(2)} kl margin ${last['kl/margin'].toFixed(3)}`} eta ${(eta / 1000).toFixed(0)}s`);
      if (c.eval_every > 0 && evalPairs.length > 0 && state.step % c.eval_every === 0) await evaluate();
      if (c.save_every > 0 && state.step % c.save_every === 0 && state.step < totalSteps) {
        await onMain(dist, 'save', () => saveCheckpoint(out, `step-${state.step}`, policy, step, state));
      }
    }
    const noStep = stopped && state.step === startStep ? stopBeforeFirstStep() : null;
    if (noStep) return noStep;
    const finalDir = await onMain(dist, 'save', () =>
      stopped ? saveCheckpoint(out, `step-${state.step}`, policy, step, state) : saveCheckpoint(out, 'final', policy, step, state));
    log(stopped ? `stopped at step ${state.step}; checkpoint ${finalDir}` : `done: ${finalDir}`);
    return { steps: state.step, examples: state.examples, outputDir: finalDir, stopped, skippedLines, lastMetrics: last, alreadyComplete: false };
  } finally {
    policy.dispose();
    reference?.dispose();
  }
}
