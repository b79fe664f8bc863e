// Model runner benchmark: forward throughput of a model shape (GPT-2 small by default; --arch
// llama / qwen2: SmolLM-135M's and Qwen2.5-0.5B's shapes), and generation with and without the
// key/value cache. (The train step's bench is train-bench.ts.)
import { buildInfo, getNumThreads, Model, type AttnImplementation, type ModelDevice, type ModelDtype } from '../index.js';
import { median } from './loss-bench.js';

export interface ModelBenchConfig {
  /** A key of modelBenchArchs. */
  arch: string;
  batch: number;
  seq: number;
  runs: number;
  promptTokens: number;
  newTokens: number;
  seed: number;
  device: ModelDevice;
  dtype: ModelDtype;
  /** null: the build's default (ModelOptions.attnImplementation). */
  attnImplementation: AttnImplementation | null;
}

export const defaultModelBenchConfig: ModelBenchConfig = { arch: 'gpt2', batch: 8, seq: 128, runs: 3, promptTokens: 128, newTokens: 32, seed: 0, device: 'cpu', dtype: 'float32', attnImplementation: null };

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

/** HuggingFaceTB/SmolLM-135M's config.json (model_type llama): GQA 9/3 heads, tied embeddings. */
export const smollm135mConfig = {
  model_type: 'llama',
  vocab_size: 49152,
  max_position_embeddings: 2048,
  hidden_size: 576,
  intermediate_size: 1536,
  num_hidden_layers: 30,
  num_attention_heads: 9,
  num_key_value_heads: 3,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
};

/** Qwen/Qwen2.5-0.5B's config.json (model_type qwen2): q/k/v biases, GQA 14/2, tied, V = 151936. */
export const qwen25halfBConfig = {
  model_type: 'qwen2',
  vocab_size: 151936,
  max_position_embeddings: 32768,
  hidden_size: 896,
  intermediate_size: 4864,
  num_hidden_layers: 24,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  tie_word_embeddings: true,
  use_sliding_window: false,
};

/** --arch NAME: the shape benchmarked, and its name in the report. */
export const modelBenchArchs: Record<string, { name: string; config: Record<string, unknown> & { vocab_size: number } }> = {
  gpt2: { name: 'GPT-2-small', config: gpt2SmallConfig },
  llama: { name: 'SmolLM-135M (llama)', config: smollm135mConfig },
  qwen2: { name: 'Qwen2.5-0.5B (qwen2)', config: qwen25halfBConfig },
};

/**
 * Forward FLOPs: 2 per token per weight that multiplies (an untied input embedding and GPT-2's
 * position table are lookups), plus attention's two [T, T] matmuls.
 */
function forwardFlops(cfg: Record<string, unknown>, parameters: number, B: number, T: number): number {
  const n = (k: string) => Number(cfg[k]);
  if (cfg.model_type === 'gpt2') return 2 * B * T * (parameters - n('n_positions') * n('n_embd')) + 4 * B * n('n_layer') * T * T * n('n_embd');
  const heads = n('num_attention_heads');
  const width = cfg.head_dim != null ? n('head_dim') * heads : n('hidden_size');
  const lookups = cfg.tie_word_embeddings === true ? 0 : n('vocab_size') * n('hidden_size');
  return 2 * B * T * (parameters - lookups) + 4 * B * n('num_hidden_layers') * T * T * width;
}

export interface ModelBenchReport {
  /** attnImplementation: the kernel that ran. */
  config: ModelBenchConfig & { threads: number; attnImplementation: AttnImplementation };
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
  const arch = modelBenchArchs[c.arch];
  if (!arch) throw new RangeError(`unknown arch '${c.arch}' (${Object.keys(modelBenchArchs).join(', ')})`);
  progress(`creating a ${arch.name}-shaped model (random weights)`);
  const model = await Model.create(arch.config, { seed: c.seed, device: c.device, dtype: c.dtype, attnImplementation: c.attnImplementation ?? undefined });
  try {
    const parameters = model.parameterCount;
    const ids = randomIds(c.batch * c.seq, arch.config.vocab_size, c.seed);
    progress(`forward, B=${c.batch} T=${c.seq}`);
    await model.forward(ids, [c.batch, c.seq]); // warm-up
    const timesMs: number[] = [];
    for (let i = 0; i < c.runs; i++) timesMs.push(await timed(() => model.forward(ids, [c.batch, c.seq])));
    const fwdMs = median(timesMs);
    const tokens = c.batch * c.seq;
    const flops = forwardFlops(arch.config, parameters, c.batch, c.seq);

    const prompt = [randomIds(c.promptTokens, arch.config.vocab_size, c.seed + 1)];
    const options = { maxNewTokens: c.newTokens, temperature: 0 };
    progress(`generation, ${c.promptTokens}-token prompt, ${c.newTokens} new tokens, with the cache`);
    await model.generate(prompt, options); // warm-up
    const cachedMs: number[] = [];
    for (let i = 0; i < c.runs; i++) cachedMs.push(await timed(() => model.generate(prompt, options)));
    progress('generation without the cache (the whole sequence per token)');
    const uncachedMs = await timed(() => model.generate(prompt, { ...options, useCache: false }));
    const cached = median(cachedMs);
    return {
      config: { ...c, threads: getNumThreads(), attnImplementation: model.attnImplementation },
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
    `tdpo bench --model: ${modelBenchArchs[c.arch].name} shape (${(r.parameters / 1e6).toFixed(1)}M parameters, V=${modelBenchArchs[c.arch].config.vocab_size}), ${c.dtype} on ${c.device}, ` +
      `${c.threads} CPU threads, libtorch ${r.torchVersion}, ${c.attnImplementation} attention; medians of ${c.runs} runs after a warm-up` +
      (c.device === 'cpu' ? '' : '; forward times include copying the float32 logits to the host'),
    '',
    `forward  B=${c.batch} T=${c.seq}: ${r.forward.medianMs.toFixed(0)} ms = ${r.forward.tokensPerSecond.toFixed(0)} tokens/s (${r.forward.gflops.toFixed(0)} GFLOP/s)`,
    `generate ${c.promptTokens}-token prompt + ${c.newTokens} new tokens, batch 1, greedy:`,
    `  with the key/value cache     ${median(r.generate.cachedMs).toFixed(0)} ms = ${r.generate.cachedTokensPerSecond.toFixed(1)} new tokens/s`,
    `  re-running the sequence      ${r.generate.uncachedMs.toFixed(0)} ms = ${r.generate.uncachedTokensPerSecond.toFixed(1)} new tokens/s`,
    `  cache speed-up per new token ${r.generate.speedup.toFixed(1)}x (prompt prefill included in both)`,
  ].join('\n');
}
