// Model runner benchmark: forward throughput of a GPT-2-small-shaped model, and generation with
// and without the key/value cache. (The train step's bench is train-bench.ts.)
import { buildInfo, getNumThreads, Model, type ModelDevice, type ModelDtype } from '../index.js';
import { median } from './loss-bench.js';

export interface ModelBenchConfig {
  batch: number;
  seq: number;
  runs: number;
  promptTokens: number;
  newTokens: number;
  seed: number;
  device: ModelDevice;
  dtype: ModelDtype;
}

export const defaultModelBenchConfig: ModelBenchConfig = { batch: 8, seq: 128, runs: 3, promptTokens: 128, newTokens: 32, seed: 0, device: 'cpu', dtype: 'float32' };

/** A GPT-2-family model config (Hugging Face names) as the benches use it. */
export interface BenchModelConfig {
  model_type: string;
  vocab_size: number;
  n_positions: number;
  n_embd: number;
  n_layer: number;
  n_head: number;
  [key: string]: unknown;
}

/** GPT-2 small: 124M parameters. */
export const gpt2SmallConfig = {
  model_type: 'gpt2',
  vocab_size: 50257,
  n_positions: 1024,
  n_embd: 768,
  n_layer: 12,
  n_head: 12,
  activation_function: 'gelu_new',
  layer_norm_epsilon: 1e-5,
} satisfies BenchModelConfig;

export interface ModelBenchReport {
  config: ModelBenchConfig & { threads: number };
  torchVersion: string;
  parameters: number;
  forward: { timesMs: number[]; medianMs: number; tokensPerSecond: number; gflops: number };
  generate: {
    cachedMs: number[];
    uncachedMs: number;
    cachedTokensPerSecond: number;
    uncachedTokensPerSecond: number;
    speedup: number;
  };
}

/** `n` token ids in [0, vocab), from `seed` alone. */
export function randomIds(n: number, vocab: number, seed: number): Int32Array {
  const ids = new Int32Array(n);
  let s = seed * 2654435761 + 1;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    ids[i] = s % vocab;
  }
  return ids;
}

async function timed<T>(f: () => Promise<T>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await f();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export async function runModelBench(c: ModelBenchConfig, progress: (m: string) => void = () => {}): Promise<ModelBenchReport> {
  progress('creating a GPT-2-small-shaped model (random weights)');
  const model = await Model.create(gpt2SmallConfig, { seed: c.seed, device: c.device, dtype: c.dtype });
  try {
    const parameters = model.parameterCount;
    const ids = randomIds(c.batch * c.seq, gpt2SmallConfig.vocab_size, c.seed);
    progress(`forward, B=${c.batch} T=${c.seq}`);
    await model.forward(ids, [c.batch, c.seq]); // warm-up
    const timesMs: number[] = [];
    for (let i = 0; i < c.runs; i++) timesMs.push(await timed(() => model.forward(ids, [c.batch, c.seq])));
    const fwdMs = median(timesMs);
    const tokens = c.batch * c.seq;
    // 2 FLOPs per weight per token (the lm_head counted via wte) plus attention's two matmuls.
    const { n_layer: L, n_embd: C } = gpt2SmallConfig;
    const flops = 2 * tokens * (parameters - gpt2SmallConfig.n_positions * C) + 4 * c.batch * L * c.seq * c.seq * C;

    const prompt = [randomIds(c.promptTokens, gpt2SmallConfig.vocab_size, c.seed + 1)];
    const options = { maxNewTokens: c.newTokens, temperature: 0 };
    progress(`generation, ${c.promptTokens}-token prompt, ${c.newTokens} new tokens, with the cache`);
    await model.generate(prompt, options); // warm-up
    const cachedMs: number[] = [];
    for (let i = 0; i < c.runs; i++) cachedMs.push(await timed(() => model.generate(prompt, options)));
    progress('generation without the cache (the whole sequence per token)');
    const uncachedMs = await timed(() => model.generate(prompt, { ...options, useCache: false }));
    const cached = median(cachedMs);
    return {
      config: { ...c, threads: getNumThreads() },
      torchVersion: buildInfo().torchVersion,
      parameters,
      forward: { timesMs, medianMs: fwdMs, tokensPerSecond: tokens / (fwdMs / 1e3), gflops: flops / (fwdMs / 1e3) / 1e9 },
      generate: {
        cachedMs,
        uncachedMs,
        cachedTokensPerSecond: c.newTokens / (cached / 1e3),
        uncachedTokensPerSecond: c.newTokens / (uncachedMs / 1e3),
        speedup: uncachedMs / cached,
      },
    };
  } finally {
    model.dispose();
  }
}

export function formatModelReport(r: ModelBenchReport): string {
  const c = r.config;
  return [
    `tdpo bench --model: GPT-2-small shape (${(r.parameters / 1e6).toFixed(1)}M parameters, V=50257), ${c.dtype} on ${c.device}, ` +
      `${c.threads} CPU threads, libtorch ${r.torchVersion}; medians of ${c.runs} runs after a warm-up` +
      (c.device === 'cpu' ? '' : '; forward times include copying the float32 logits to the host'),
    '',
    `forward  B=${c.batch} T=${c.seq}: ${r.forward.medianMs.toFixed(0)} ms = ${r.forward.tokensPerSecond.toFixed(0)} tokens/s (${r.forward.gflops.toFixed(0)} GFLOP/s)`,
    `generate ${c.promptTokens}-token prompt + ${c.newTokens} new tokens, batch 1, greedy:`,
    `  with the key/value cache     ${median(r.generate.cachedMs).toFixed(0)} ms = ${r.generate.cachedTokensPerSecond.toFixed(1)} new tokens/s`,
    `  re-running the sequence      ${r.generate.uncachedMs.toFixed(0)} ms = ${r.generate.uncachedTokensPerSecond.toFixed(1)} new tokens/s`,
    `  cache speed-up per new token ${r.generate.speedup.toFixed(1)}x (prompt prefill included in both)`,
  ].join('\n');
}
