// Fused vs reference loss benchmark. Each (implementation, pass) runs in its own child process so
// that its peak RSS is its own; the parent also measures a memory-copy bandwidth in the same run.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import packageRoot from '../package-root.cjs';
import { buildInfo, getNumThreads, setNumThreads, tdpoLoss, tdpoLossSync, type TdpoImplementation, type TdpoLossInputs, type TdpoVariant } from '../index.js';

export interface LossBenchConfig {
  batch: number;
  seq: number;
  vocab: number;
  variant: TdpoVariant;
  runs: number;
  warmup: number;
  threads: number;
  /** Fraction of each row's positions that are prompt (label -100), as in real batches. */
  promptFraction: number;
  seed: number;
}

export interface CaseResult {
  implementation: TdpoImplementation;
  grad: boolean;
  timesMs: number[];
  medianMs: number;
  /** Resident set size before the inputs were allocated (Node + libtorch loaded). */
  baseRssBytes: number;
  /** Peak RSS of the child over its whole life. */
  peakRssBytes: number;
  /** Peak RSS minus the baseline: what inputs, outputs and the implementation's work took. */
  peakAboveBaseBytes: number;
  /** Fused forward only: the async call's cost under the buffer contract (see asyncContract). */
  async?: AsyncContractResult;
}

/**
 * tdpoLoss (async) copies inputs on an ordinary ArrayBuffer at the call, on the calling thread,
 * and reads SharedArrayBuffer inputs in place. Medians of: the time the call holds the event
 * loop (until it returns its promise) and the time until the promise settles.
 */
export interface AsyncContractResult {
  copied: { blockMs: number; totalMs: number };
  shared: { blockMs: number; totalMs: number };
  sync: { totalMs: number };
}

export interface LossBenchReport {
  config: LossBenchConfig;
  torchVersion: string;
  /** The fused kernel's instruction set (buildInfo().kernelIsa): figures depend on it. */
  kernelIsa: string;
  node: string;
  inputBytes: number;
  gradBytes: number;
  memcpyGBps: number;
  cases: CaseResult[];
  /** Per pass: reference median / fused median. */
  speedup: { forward: number; forwardBackward: number };
  /** Bytes a loss must at least move (read both logit arrays once; write the gradient) / time. */
  effectiveGBps: { forward: number; forwardBackward: number };
  /** Fused median / (minimum bytes / memcpy bandwidth). */
  boundRatio: { forward: number; forwardBackward: number };
  /** Fused peak above baseline / (inputs + gradient). */
  fusedMemoryRatio: number;
  asyncContract: AsyncContractResult;
}

export const defaultLossBenchConfig: LossBenchConfig = {
  batch: 8,
  seq: 256,
  vocab: 50257,
  variant: 'tdpo2',
  runs: 7,
  warmup: 1,
  threads: 0,
  promptFraction: 0.25,
  seed: 1,
};

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// xorshift32 into [-4, 4): a logit spread like a trained LM's, cheap enough for 200M values.
function fillRandom(a: Float32Array, seed: number): void {
  let s = seed >>> 0 || 1;
  for (let i = 0; i < a.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[i] = (s >>> 0) * (8 / 4294967296) - 4;
  }
}

export function makeInputs(c: LossBenchConfig) {
  const n = c.batch * c.seq * c.vocab;
  const policyLogits = new Float32Array(n);
  const referenceLogits = new Float32Array(n);
  fillRandom(policyLogits, c.seed);
  fillRandom(referenceLogits, c.seed + 7919);
  const labels = new Int32Array(c.batch * c.seq);
  const prompt = Math.floor(c.seq * c.promptFraction);
  for (let i = 0; i < labels.length; i++) {
    labels[i] = i % c.seq < prompt ? -100 : (i * 2654435761) % c.vocab;
  }
  return { policyLogits, referenceLogits, labels, shape: [c.batch, c.seq, c.vocab] as const };
}

const tick = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

// One timed call. A separate synchronous function, so that the result (and its gradient buffer)
// is unreachable once it returns: a local of the async loop below would stay alive in the
// suspended frame across the next collection and double the measured peak memory.
function timeOnce(inputs: ReturnType<typeof makeInputs>, options: Parameters<typeof tdpoLossSync>[1]) {
  const t0 = process.hrtime.bigint();
  const out = tdpoLossSync(inputs, options);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return { ms, loss: out.loss };
}

/** Runs in the child: one implementation, one pass, warm-up then timed runs. */
export async function runCase(
  c: LossBenchConfig,
  implementation: TdpoImplementation,
  grad: boolean,
): Promise<CaseResult> {
  if (c.threads > 0) setNumThreads(c.threads);
  const gc = (globalThis as { gc?: () => void }).gc;
  const baseRssBytes = process.memoryUsage().rss;
  const inputs = makeInputs(c);
  const options = { variant: c.variant, implementation, grad };
  const timesMs: number[] = [];
  for (let i = 0; i < c.warmup + c.runs; i++) {
    // Free the previous result's buffers (Node-API finalizers run after a turn of the event
    // loop), so every run starts from the same memory state, for both implementations.
    gc?.();
    await tick();
    await tick();
    const { ms, loss } = timeOnce(inputs, options);
    if (!Number.isFinite(loss)) throw new Error(`${implementation}: loss is ${loss}`);
    if (i >= c.warmup) timesMs.push(ms);
  }
  // Read before the async part, whose shared copies of the inputs would raise the peak.
  const peakRssBytes = process.resourceUsage().maxRSS * 1024;
  const async = implementation === 'fused' && !grad ? await asyncContract(c, inputs, timesMs) : undefined;
  return {
    implementation,
    grad,
    timesMs,
    medianMs: median(timesMs),
    baseRssBytes,
    peakRssBytes,
    peakAboveBaseBytes: peakRssBytes - baseRssBytes,
    ...(async ? { async } : {}),
  };
}

async function asyncContract(c: LossBenchConfig, inputs: ReturnType<typeof makeInputs>, syncTimes: number[]): Promise<AsyncContractResult> {
  const shareOf = (a: Float32Array) => {
    const s = new Float32Array(new SharedArrayBuffer(a.byteLength));
    s.set(a);
    return s;
  };
  const shared = { ...inputs, policyLogits: shareOf(inputs.policyLogits), referenceLogits: shareOf(inputs.referenceLogits) };
  const measure = async (x: TdpoLossInputs) => {
    const block: number[] = [];
    const total: number[] = [];
    for (let i = 0; i < c.warmup + c.runs; i++) {
      await tick();
      const t0 = process.hrtime.bigint();
      const pending = tdpoLoss(x, { variant: c.variant });
      const t1 = process.hrtime.bigint();
      await pending;
      const t2 = process.hrtime.bigint();
      if (i >= c.warmup) {
        block.push(Number(t1 - t0) / 1e6);
        total.push(Number(t2 - t0) / 1e6);
      }
    }
    return { blockMs: median(block), totalMs: median(total) };
  };
  return { copied: await measure(inputs), shared: await measure(shared), sync: { totalMs: median(syncTimes) } };
}

/** Memory-copy bandwidth (read + write bytes per second) of this machine, now, one thread. */
export function measureMemcpyGBps(bytes = 256 << 20, reps = 7): number {
  const src = new Uint8Array(bytes).fill(1);
  const dst = new Uint8Array(bytes).fill(2);
  const rates: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    dst.set(src);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    rates.push((2 * bytes) / s / 1e9);
  }
  return median(rates);
}

function runChild(
  c: LossBenchConfig,
  implementation: TdpoImplementation,
  grad: boolean,
): CaseResult {
  // A child entry of the bench's own (the library never runs the CLI); always the ESM build.
  const child = path.join(packageRoot, 'dist', 'esm', 'bench', 'loss-child.js');
  const spec = JSON.stringify({ config: c, implementation, grad });
  const r = spawnSync(process.execPath, ['--expose-gc', child, spec], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 16 << 20,
  });
  if (r.status !== 0) {
    throw new Error(
      `bench child (${implementation}, grad=${grad}) failed with ${r.status ?? r.signal}`,
    );
  }
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as CaseResult;
}

export function runLossBench(
  c: LossBenchConfig,
  progress: (msg: string) => void = () => {},
): LossBenchReport {
  const threads = c.threads > 0 ? c.threads : getNumThreads();
  const config = { ...c, threads };
  const n = c.batch * c.seq * c.vocab;
  const cases: CaseResult[] = [];
  for (const implementation of ['fused', 'reference'] as const) {
    for (const grad of [false, true]) {
      progress(`${implementation} ${grad ? 'forward+backward' : 'forward'}`);
      cases.push(runChild(config, implementation, grad));
    }
  }
  // After the children: a child inherits the parent's peak RSS on Linux, and this test's 0.5 GB of
  // buffers would otherwise set every child's peak.
  progress(`memory-copy bandwidth`);
  const memcpyGBps = measureMemcpyGBps();
  const get = (impl: TdpoImplementation, grad: boolean) =>
    cases.find((x) => x.implementation === impl && x.grad === grad)!;
  const inputBytes = 2 * n * 4 + c.batch * c.seq * 4;
  const gradBytes = n * 4;
  const minBytes = { forward: 2 * n * 4, forwardBackward: 3 * n * 4 };
  const fusedF = get('fused', false).medianMs / 1e3;
  const fusedFB = get('fused', true).medianMs / 1e3;
  return {
    config,
    torchVersion: buildInfo().torchVersion,
    kernelIsa: buildInfo().kernelIsa,
    node: process.version,
    inputBytes,
    gradBytes,
    memcpyGBps,
    cases,
    speedup: {
      forward: get('reference', false).medianMs / get('fused', false).medianMs,
      forwardBackward: get('reference', true).medianMs / get('fused', true).medianMs,
    },
    effectiveGBps: {
      forward: minBytes.forward / fusedF / 1e9,
      forwardBackward: minBytes.forwardBackward / fusedFB / 1e9,
    },
    boundRatio: {
      forward: fusedF / (minBytes.forward / (memcpyGBps * 1e9)),
      forwardBackward: fusedFB / (minBytes.forwardBackward / (memcpyGBps * 1e9)),
    },
    fusedMemoryRatio: get('fused', true).peakAboveBaseBytes / (inputBytes + gradBytes),
    asyncContract: get('fused', false).async!,
  };
}

/** The report's lines on the async call's buffer contract. */
export function formatAsyncContract(a: AsyncContractResult): string {
  const f = (ms: number) => `${ms.toFixed(1)} ms`;
  return [
    `async fused forward (tdpoLoss), event loop held / until settled: ArrayBuffer inputs (copied at the call) ` +
      `${f(a.copied.blockMs)} / ${f(a.copied.totalMs)}; SharedArrayBuffer inputs (read in place) ${f(a.shared.blockMs)} / ${f(a.shared.totalMs)}; ` +
      `sync call ${f(a.sync.totalMs)}`,
  ].join('\n');
}
