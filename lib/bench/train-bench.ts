// `tdpo bench --train`: the memory/time trade-offs of one TDPO2 + RMSprop train step (policy
// forward+backward, reference forward, loss, optimizer update) on a GPT-2-small shape. Each
// configuration (materialised [B, T, V] logits; the fused linear + loss; the fused linear with
// gradient checkpointing) runs in a child process of its own (train-child.ts), so that the peak
// RSS it reports is its own.
import { spawn } from 'node:child_process';
import path from 'node:path';
import packageRoot from '../package-root.cjs';
import { chunkMbOn, defaultConfig, type AttnImplementation, type ModelDevice, type ModelDtype } from '../index.js';
import { median } from './loss-bench.js';
import { gpt2SmallConfig } from './model-bench.js';
import type { TrainBenchModel, TrainBenchVariant, TrainChildError, TrainChildResult, TrainChildSpec, TrainRunSpec } from './train-child.js';

export type { TrainBenchModel, TrainBenchVariant };

/** Pythia-1B's shape (EleutherAI/pythia-1b's config.json): the GPU target of the issue. */
export const pythia1bConfig = {
  model_type: 'gpt_neox',
  vocab_size: 50304,
  max_position_embeddings: 2048,
  hidden_size: 2048,
  num_hidden_layers: 16,
  num_attention_heads: 8,
  intermediate_size: 8192,
  rotary_pct: 0.25,
  rotary_emb_base: 10000,
  use_parallel_residual: true,
  layer_norm_eps: 1e-5,
  hidden_act: 'gelu',
  tie_word_embeddings: false,
};

/** --shape NAME. */
export const trainBenchShapes: Record<string, TrainBenchModel> = { 'gpt2-small': gpt2SmallConfig, 'pythia-1b': pythia1bConfig };

const SHAPE_TITLES: Record<string, string> = { 'gpt2-small': 'GPT-2-small', 'pythia-1b': 'Pythia-1B' };

const positionsOf = (m: TrainBenchModel) => Number(m.n_positions ?? m.max_position_embeddings);

/**
 * What `--train` runs without --fused-linear or --gradient-checkpointing: the materialised row
 * first (the ratios' base; with --attn-implementation both, its eager row).
 */
export const trainBenchVariants: readonly TrainBenchVariant[] = [
  { fusedLinear: false, gradientCheckpointing: false },
  { fusedLinear: true, gradientCheckpointing: false },
  { fusedLinear: true, gradientCheckpointing: true },
];

export interface TrainBenchConfig extends TrainRunSpec {
  /** One child process each, in this order. */
  variants: TrainBenchVariant[];
}

export const defaultTrainBenchConfig: TrainBenchConfig = {
  model: gpt2SmallConfig,
  pairs: 2,
  seq: 128,
  runs: 3,
  seed: 0,
  threads: 0,
  device: 'cpu',
  dtype: 'float32',
  chunkMb: defaultConfig.loss.chunk_mb, // the library's default
  variants: [...trainBenchVariants],
};

export interface TrainBenchRow extends TrainBenchVariant {
  name: string;
  /** The kernel the row ran: the variant's, or the build's default. */
  attnImplementation: AttnImplementation;
  timesMs: number[];
  medianMs: number;
  pairsPerSecond: number;
  tokensPerSecond: number;
  /** After creating the policy, its reference and the train step, before the first step. */
  rssBeforeBytes: number;
  /** The child process's maximum RSS, read after its steps. */
  peakRssBytes: number;
  /** peakRssBytes - rssBeforeBytes: what the steps add (gradients and optimizer state included). */
  peakAboveBeforeBytes: number;
  /** On a GPU: the CUDA caching allocator's peak during the steps (weights included); else null. */
  devicePeakBytes: number | null;
  /** The warm-up step's loss: the same batch and weights in every configuration. */
  warmupLoss: number;
  /**
   * Against the materialised row (no fused linear, no checkpointing) when it ran, else null:
   * time = this row's median step time / its; peakRss = its peak RSS / this row's; peakDevice =
   * the same for the GPU peaks (null on the CPU).
   */
  vsMaterialised: { time: number; peakRss: number; peakDevice: number | null } | null;
}

export interface TrainBenchReport {
  /** threads: the count each child ran with; chunkMb: the chunk the fused linear used (the device's default where none was given). */
  config: TrainBenchConfig & { chunkMb: number; loss: 'tdpo2'; optimizer: 'rmsprop' };
  torchVersion: string;
  node: string;
  parameters: number;
  /** Bytes of one [B, T, V] float32 tensor (B = 2 * pairs): the unit the memory targets are stated in. */
  logitsBytes: number;
  rows: TrainBenchRow[];
}

export function variantName(v: TrainBenchVariant): string {
  const base = v.fusedLinear ? 'fused linear' : 'materialised logits';
  const named = v.gradientCheckpointing ? `${base} + checkpointing` : base;
  return v.attnImplementation ? `${named}, ${v.attnImplementation}` : named;
}

const isMaterialised = (v: TrainBenchVariant) => !v.fusedLinear && !v.gradientCheckpointing;

/** Runs one configuration in its child; a child's error (e.g. a refused device) is rethrown with its message and code. */
function runChild(spec: TrainChildSpec, name: string): Promise<TrainChildResult> {
  // A child entry of the bench's own (the library never runs the CLI); always the ESM build.
  const child = path.join(packageRoot, 'dist', 'esm', 'bench', 'train-child.js');
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [child, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    // TDPO_MEMORY_TRACE=1: the child's stderr passes through, for its per-phase memory lines
    // (src/common/alloc.h).
    const trace = process.env.TDPO_MEMORY_TRACE === '1';
    p.stderr.on('data', (d) => {
      err += d;
      if (trace) process.stderr.write(d);
    });
    p.on('error', reject);
    p.on('close', (code, signal) => {
      let parsed: (TrainChildResult & Partial<TrainChildError>) | undefined;
      try {
        parsed = JSON.parse(out.trim().split('\n').pop() ?? '') as TrainChildResult & Partial<TrainChildError>;
      } catch {
        parsed = undefined;
      }
      if (code === 0 && parsed && !parsed.error) {
        resolve(parsed);
      } else if (parsed?.error) {
        reject(Object.assign(new Error(`train bench (${name}): ${parsed.error.message}`), parsed.error.code ? { code: parsed.error.code } : {}));
      } else {
        const tail = err.trim().split('\n').slice(-3).join(' ');
        reject(new Error(`train bench child (${name}) exited with ${code ?? signal}${tail ? `: ${tail}` : ''}`));
      }
    });
  });
}

export async function runTrainBench(c: TrainBenchConfig, progress: (m: string) => void = () => {}): Promise<TrainBenchReport> {
  if (c.variants.length === 0) throw new RangeError('the train bench needs at least one configuration');
  if (c.seq < 2 || c.seq > positionsOf(c.model)) throw new RangeError(`--seq must be between 2 and the model's positions (${positionsOf(c.model)}), got ${c.seq}`);
  const B = 2 * c.pairs;
  const rows: TrainBenchRow[] = [];
  let first: TrainChildResult | undefined;
  const { variants, ...run } = c; // what every configuration's child shares
  for (const v of variants) {
    const name = variantName(v);
    progress(`${name}: ${c.pairs} pair${c.pairs === 1 ? '' : 's'} x T=${c.seq}, a warm-up step and ${c.runs} timed`);
    const spec: TrainChildSpec = { ...run, ...v };
    const r = await runChild(spec, name);
    first ??= r;
    const ms = median(r.timesMs);
    rows.push({
      name,
      ...v,
      attnImplementation: r.attnImplementation,
      timesMs: r.timesMs,
      medianMs: ms,
      pairsPerSecond: c.pairs / (ms / 1e3),
      tokensPerSecond: (B * c.seq) / (ms / 1e3),
      rssBeforeBytes: r.rssBeforeBytes,
      peakRssBytes: r.peakRssBytes,
      peakAboveBeforeBytes: Math.max(0, r.peakRssBytes - r.rssBeforeBytes),
      devicePeakBytes: r.devicePeakBytes,
      warmupLoss: r.warmupLoss,
      vsMaterialised: null,
    });
  }
  const base = rows.find(isMaterialised);
  if (base) {
    for (const row of rows) {
      const peakDevice = base.devicePeakBytes && row.devicePeakBytes ? base.devicePeakBytes / row.devicePeakBytes : null;
      row.vsMaterialised = { time: row.medianMs / base.medianMs, peakRss: base.peakRssBytes / row.peakRssBytes, peakDevice };
    }
  }
  return {
    config: { ...c, threads: first!.threads, chunkMb: c.chunkMb ?? chunkMbOn(c.device), loss: 'tdpo2', optimizer: 'rmsprop' },
    torchVersion: first!.torchVersion,
    node: process.version,
    parameters: first!.parameters,
    logitsBytes: B * c.seq * c.model.vocab_size * 4,
    rows,
  };
}

function fmtBytes(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(0)} MB`;
  return `${(bytes / 1e3).toFixed(1)} kB`;
}

/** The times of a row in one unit: seconds from a second up, else milliseconds. */
function fmtTimes(timesMs: number[], unitOf: number): string {
  return unitOf >= 1000 ? `${timesMs.map((t) => (t / 1e3).toFixed(2)).join(' ')} s` : `${timesMs.map((t) => t.toFixed(1)).join(' ')} ms`;
}

function shapeName(r: TrainBenchReport): string {
  const m = r.config.model;
  const count = r.parameters >= 1e9 ? `${(r.parameters / 1e9).toFixed(2)}B` : r.parameters >= 1e6 ? `${(r.parameters / 1e6).toFixed(1)}M` : `${(r.parameters / 1e3).toFixed(1)}k`;
  const params = `${count} parameters, V=${m.vocab_size}`;
  const named = Object.entries(trainBenchShapes).find(([, v]) => JSON.stringify(v) === JSON.stringify(m));
  if (named) return `a ${SHAPE_TITLES[named[0]] ?? named[0]} shape (${params})`;
  const keys = m.model_type === 'gpt2' ? ['n_layer', 'n_embd', 'n_head'] : ['num_hidden_layers', 'hidden_size', 'num_attention_heads'];
  return `a ${m.model_type} shape with ${keys.map((k) => `${k}=${String(m[k])}`).join(', ')} (${params})`;
}

export function formatTrainReport(r: TrainBenchReport): string {
  const c = r.config;
  const B = 2 * c.pairs;
  const hasBase = r.rows.some((x) => x.vsMaterialised !== null);
  const gpu = c.device !== 'cpu';
  const table = [
    ['', 'step', 'steps', 'pairs/s', 'tokens/s', 'RSS before', 'peak RSS', 'peak − before', ...(gpu ? ['GPU peak'] : []), ...(hasBase ? ['time ×', 'peak RSS ÷', ...(gpu ? ['GPU peak ÷'] : [])] : [])],
    ...r.rows.map((x) => [
      x.name,
      fmtTimes([x.medianMs], x.medianMs),
      fmtTimes(x.timesMs, x.medianMs),
      x.pairsPerSecond.toFixed(2),
      x.tokensPerSecond.toFixed(0),
      fmtBytes(x.rssBeforeBytes),
      fmtBytes(x.peakRssBytes),
      fmtBytes(x.peakAboveBeforeBytes),
      ...(gpu ? [x.devicePeakBytes === null ? 'n/a' : fmtBytes(x.devicePeakBytes)] : []),
      ...(x.vsMaterialised
        ? [x.vsMaterialised.time.toFixed(2), x.vsMaterialised.peakRss.toFixed(2), ...(gpu ? [x.vsMaterialised.peakDevice?.toFixed(2) ?? 'n/a'] : [])]
        : []),
    ]),
  ];
  const widths = table[0].map((_, j) => Math.max(...table.map((row) => row[j].length)));
  const lines = table.map((row) => row.map((cell, j) => (j === 0 ? cell.padEnd(widths[j]) : cell.padStart(widths[j]))).join('   ').trimEnd());
  return [
    `tdpo bench --train: one TDPO2 + RMSprop step (policy forward+backward, reference forward, loss, update) on ${shapeName(r)}, ` +
      `${c.pairs} pair${c.pairs === 1 ? '' : 's'} (${B} sequences) x T=${c.seq}, ${c.dtype} on ${c.device}, ${c.threads} thread${c.threads === 1 ? '' : 's'}, libtorch ${r.torchVersion}, ${[...new Set(r.rows.map((x) => x.attnImplementation))].join(' and ')} attention; ` +
      `${c.runs === 1 ? 'one timed step' : `median of ${c.runs} steps`} after a warm-up step, each configuration in its own process`,
    `one [B, T, V] float32 tensor (B=${B}, T=${c.seq}, V=${c.model.vocab_size}): ${fmtBytes(r.logitsBytes)}; fused linear chunk: ${c.chunkMb} MB of logits`,
    '',
    ...lines,
    '',
    `step: the median step time (steps: each timed step); RSS before: after creating the policy and its reference, before the first step; ` +
      `peak RSS: the process's maximum${gpu ? ' (host memory only)' : ''}; peak − before: what the steps add, gradients and optimizer state included` +
      (gpu ? "; GPU peak: the CUDA caching allocator's peak allocation during the steps, weights included (n/a: libtorch < 2.9 cannot say)" : ''),
    ...(hasBase ? ["time ×: this row's step time / the materialised row's; peak RSS ÷: the materialised row's peak RSS / this row's (above 1: less memory)"] : []),
  ].join('\n');
}
