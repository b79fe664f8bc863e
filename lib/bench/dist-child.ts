// One rank of the distributed train-step bench (dist-bench.ts): `node dist-child.js SPEC`. It trains
// as a user would, through train() with the distributed option, on the bench's generated pairs;
// rank 0 prints each step's time and its communication figures (dist/ metrics) as JSON.
import { loadConfig, train, type Metrics } from '../index.js';
import { gpt2SmallConfig } from './model-bench.js';

export interface DistChildSpec {
  rank: number;
  worldSize: number;
  port: number;
  threads: number;
  pairs: number;
  seq: number;
  runs: number;
  seed: number;
  /** The generated pairs (tokenized format), the same file for every rank. */
  data: string;
  /** output_dir: one per configuration (rank 0 writes it). */
  out: string;
}

async function main(spec: DistChildSpec): Promise<void> {
  const config = loadConfig(null, [], {
    model: { ...gpt2SmallConfig, eos_token_id: gpt2SmallConfig.vocab_size - 1 },
    data: { train: spec.data, eval: null, format: 'tokenized', eval_size: 0, skip_invalid: false, drop_last: true, group_by_length: false },
    loss: { name: 'tdpo2', alpha: 0.5, beta: 0.1 },
    optimizer: 'rmsprop',
    lr: 5e-6,
    warmup_steps: 0,
    batch_size: spec.pairs,
    // The first step warms up (allocations, first touches of memory) and is not timed.
    max_steps: spec.runs + 1,
    max_length: spec.seq,
    max_prompt_length: spec.seq / 4,
    seed: spec.seed,
    threads: spec.threads,
    output_dir: spec.out,
  });
  const at: number[] = [];
  const steps: Metrics[] = [];
  await train(config, {
    overwrite: true,
    distributed: spec.worldSize > 1 ? { rank: spec.rank, worldSize: spec.worldSize, masterPort: spec.port, timeoutMs: 300_000 } : undefined,
    onStep: (m) => {
      if (typeof m.loss !== 'number') return;
      at.push(performance.now());
      steps.push(m);
    },
  });
  if (spec.rank !== 0) return;
  const timed = steps.slice(1);
  const result = {
    timesMs: timed.map((_, i) => at[i + 1] - at[i]),
    commMs: timed.map((m) => m['dist/allreduce_ms'] ?? 0),
    bytes: timed.map((m) => m['dist/allreduce_bytes'] ?? 0),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

void main(JSON.parse(process.argv[2] ?? '{}') as DistChildSpec);
