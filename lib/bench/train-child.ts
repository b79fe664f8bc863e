// One configuration of the train-step bench (train-bench.ts), in a process of its own so that its
// peak RSS is its own: `node dist/esm/bench/train-child.js SPEC`. Creates the policy (and, through
// TrainStep, its reference copy), runs one untimed warm-up step and `runs` timed steps, and prints
// one JSON line on stdout: a TrainChildResult, or { error: { message, code } } with exit code 1.
import { buildInfo, getNumThreads, Model, setNumThreads, TrainStep, type ModelDevice, type ModelDtype } from '../index.js';
import { randomIds, type BenchModelConfig } from './model-bench.js';

export interface TrainChildSpec {
  model: BenchModelConfig;
  pairs: number;
  seq: number;
  runs: number;
  seed: number;
  /** Intra-op threads; 0: libtorch's default (the CPUs this process may run on). */
  threads: number;
  device: ModelDevice;
  dtype: ModelDtype;
  fusedLinear: boolean;
  chunkMb: number;
  gradientCheckpointing: boolean;
}

export interface TrainChildResult {
  timesMs: number[];
  /** RSS after creating the policy, its reference and the train step, before the first step. */
  rssBeforeBytes: number;
  /** The process's maximum RSS, read after the timed steps. */
  peakRssBytes: number;
  /** The warm-up step's loss (the same batch and weights in every configuration). */
  warmupLoss: number;
  parameters: number;
  threads: number;
  torchVersion: string;
}

export interface TrainChildError {
  error: { message: string; code?: string };
}

async function main(spec: TrainChildSpec): Promise<TrainChildResult> {
  if (spec.threads > 0) setNumThreads(spec.threads);
  const policy = await Model.create(spec.model, { seed: spec.seed, device: spec.device, dtype: spec.dtype });
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
    const warmupLoss = await once();
    const timesMs: number[] = [];
    for (let i = 0; i < spec.runs; i++) {
      const t0 = process.hrtime.bigint();
      await once();
      timesMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    const peakRssBytes = process.resourceUsage().maxRSS * 1024;
    return { timesMs, rssBeforeBytes, peakRssBytes, warmupLoss, parameters: policy.parameterCount, threads: getNumThreads(), torchVersion: buildInfo().torchVersion };
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
