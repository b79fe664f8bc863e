// One configuration of the train-step bench (train-bench.ts), in a process of its own so that its
// peak RSS is its own: `node dist/esm/bench/train-child.js SPEC`. Creates the policy (and, through
// TrainStep, its reference copy), runs one untimed warm-up step and `runs` timed steps, and prints
// one JSON line on stdout: a TrainChildResult, or { error: { message, code } } with exit code 1.
import { buildInfo, cudaPeakBytes, getNumThreads, Model, setNumThreads, TrainStep, type AttnImplementation, type ModelDevice, type ModelDtype } from '../index.js';
import { randomIds } from './model-bench.js';

/** A model config (Hugging Face names) for the train bench: any architecture Model.create takes. */
export type TrainBenchModel = { model_type: string; vocab_size: number; [key: string]: unknown };

/** What every configuration of one bench run shares. */
export interface TrainRunSpec {
  /** The model's shape (random weights). */
  model: TrainBenchModel;
  /** Preference pairs per step: 2 * pairs sequences. */
  pairs: number;
  seq: number;
  /** Timed steps, after one untimed warm-up step. */
  runs: number;
  seed: number;
  /** Intra-op threads; 0: libtorch's default (the CPUs this process may run on). */
  threads: number;
  device: ModelDevice;
  dtype: ModelDtype;
  /** With fusedLinear: the chunk's logits (policy + reference, float32) in MB; null: the device's default. */
  chunkMb: number | null;
}

/** How the step is computed (TrainStepOptions of the same names). */
export interface TrainBenchVariant {
  fusedLinear: boolean;
  gradientCheckpointing: boolean;
  /** The models' attention kernel (ModelOptions.attnImplementation); absent: the build's default. */
  attnImplementation?: AttnImplementation;
}

export type TrainChildSpec = TrainRunSpec & TrainBenchVariant;

export interface TrainChildResult {
  timesMs: number[];
  /** RSS after creating the policy, its reference and the train step, before the first step. */
  rssBeforeBytes: number;
  /** The process's maximum RSS, read after the timed steps. */
  peakRssBytes: number;
  /** On a CUDA device: the caching allocator's peak during the steps (null: on the CPU, or unknown to this libtorch). */
  devicePeakBytes: number | null;
  /** The warm-up step's loss (the same batch and weights in every configuration). */
  warmupLoss: number;
  parameters: number;
  threads: number;
  torchVersion: string;
  /** The attention kernel the models ran (the build's default where the spec gave none). */
  attnImplementation: AttnImplementation;
}

export interface TrainChildError {
  error: { message: string; code?: string };
}

async function main(spec: TrainChildSpec): Promise<TrainChildResult> {
  if (spec.threads > 0) setNumThreads(spec.threads);
  const policy = await Model.create(spec.model, { seed: spec.seed, device: spec.device, dtype: spec.dtype, attnImplementation: spec.attnImplementation });
  try {
    const step = await TrainStep.create(policy, {
      loss: 'tdpo2',
      optimizer: 'rmsprop',
      fusedLinear: spec.fusedLinear,
      chunkMb: spec.chunkMb,
      gradientCheckpointing: spec.gradientCheckpointing,
    });
    const B = 2 * spec.pairs;
    const inputIds = randomIds(B * spec.seq, spec.model.vocab_size, spec.seed + 2);
    const labels = Int32Array.from(inputIds, (x, i) => (i % spec.seq < spec.seq / 4 ? -100 : x)); // a quarter prompt
    const batch = { inputIds, labels, shape: [B, spec.seq] as const };
    const once = async () => {
      const stats = await step.accumulate(batch);
      await step.apply(5e-6, 10);
      return stats.loss;
    };
    const rssBeforeBytes = process.memoryUsage().rss;
    // On a GPU the caching allocator's peak from here on: weights, reference and step state included.
    const gpu = spec.device === 'cpu' ? -1 : spec.device === 'cuda' ? 0 : Number(spec.device.slice('cuda:'.length));
    if (gpu >= 0) cudaPeakBytes(gpu, true);
    const warmupLoss = await once();
    const timesMs: number[] = [];
    for (let i = 0; i < spec.runs; i++) {
      const t0 = process.hrtime.bigint();
      await once();
      timesMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    const peakRssBytes = process.resourceUsage().maxRSS * 1024;
    const devicePeakBytes = gpu >= 0 ? cudaPeakBytes(gpu) : null;
    return { timesMs, rssBeforeBytes, peakRssBytes, devicePeakBytes, warmupLoss, parameters: policy.parameterCount, threads: getNumThreads(), torchVersion: buildInfo().torchVersion, attnImplementation: policy.attnImplementation };
  } finally {
    policy.dispose();
  }
}

// No top-level await: this file is compiled to CommonJS too.
void main(JSON.parse(process.argv[2] ?? '{}') as TrainChildSpec).then(
  (result) => process.stdout.write(`${JSON.stringify(result)}\n`),
  (err: unknown) => {
    const e = err as { message?: unknown; code?: unknown };
    const out: TrainChildError = {
      error: { message: typeof e?.message === 'string' ? e.message : String(err), ...(typeof e?.code === 'string' ? { code: e.code } : {}) },
    };
    process.stdout.write(`${JSON.stringify(out)}\n`);
    process.exitCode = 1;
  },
);
