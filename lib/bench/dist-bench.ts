// `tdpo bench --train --nproc-per-node N`: the cost of data parallelism on this machine. TDPO2 +
// RMSprop steps of train() on the GPT-2-small shape, the same global batch of generated pairs, run
// by 1 process with N threads and by N processes with 1 thread each (c10d: Gloo over loopback);
// each step's time in collectives and the bytes reduced come from train()'s dist/ metrics.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import packageRoot from '../package-root.cjs';
import { buildInfo } from '../index.js';
import { freePort } from '../cli/launch.js';
import type { DistChildSpec } from './dist-child.js';
import { median } from './loss-bench.js';
import { gpt2SmallConfig } from './model-bench.js';

export interface DistBenchConfig {
  nproc: number;
  pairs: number;
  seq: number;
  runs: number;
  seed: number;
}

interface ChildResult {
  timesMs: number[];
  commMs: number[];
  bytes: number[];
}

export interface DistBenchRow {
  processes: number;
  threadsPerProcess: number;
  timesMs: number[];
  medianMs: number;
  pairsPerSecond: number;
  /** Median over runs of rank 0's time in collectives (gradient allreduce + the statistics). */
  allreduceMs: number;
  allreduceShare: number;
  bytesPerStep: number;
}

export interface DistBenchReport {
  config: DistBenchConfig;
  torchVersion: string;
  rows: DistBenchRow[];
}

/**
 * The global batch as a tokenized data file: pair i's ids come from (seed, i) alone, so every world
 * size trains on the same pairs; a quarter of each row is prompt.
 */
function writePairs(file: string, c: DistBenchConfig): void {
  const vocab = gpt2SmallConfig.vocab_size - 1; // the last id is the EOS train() appends
  const row = (i: number, side: number, n: number) => {
    const ids: number[] = [];
    let s = ((c.seed + 1) * 2654435761 + 7919 * i + 104729 * side) >>> 0;
    for (let t = 0; t < n; t++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      ids.push(s % vocab);
    }
    return ids;
  };
  const prompt = c.seq / 4;
  const lines = Array.from({ length: c.pairs }, (_, i) =>
    JSON.stringify({ prompt_ids: row(i, 2, prompt), chosen_ids: row(i, 0, c.seq - prompt - 1), rejected_ids: row(i, 1, c.seq - prompt - 1) }),
  );
  writeFileSync(file, `${lines.join('\n')}\n`);
}

async function runRanks(c: DistBenchConfig, dir: string, processes: number, threads: number): Promise<ChildResult> {
  const child = path.join(packageRoot, 'dist', 'esm', 'bench', 'dist-child.js');
  const port = await freePort();
  const results = await Promise.all(
    Array.from({ length: processes }, (_, rank) =>
      new Promise<string>((resolve, reject) => {
        const spec: DistChildSpec = { rank, worldSize: processes, port, threads, pairs: c.pairs, seq: c.seq, runs: c.runs, seed: c.seed, data: path.join(dir, 'pairs.jsonl'), out: path.join(dir, `run-${processes}`) };
        const p = spawn(process.execPath, [child, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (err += d));
        p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`bench rank ${rank} exited with ${code}: ${err.trim().split('\n').slice(-3).join(' ')}`))));
      }),
    ),
  );
  return JSON.parse(results[0]) as ChildResult;
}

export async function runDistBench(c: DistBenchConfig, progress: (m: string) => void = () => {}): Promise<DistBenchReport> {
  if (c.seq % 4 !== 0 || c.seq < 8) throw new RangeError(`--seq must be a multiple of 4 and at least 8, got ${c.seq}`);
  const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-dist-bench-'));
  try {
    writePairs(path.join(dir, 'pairs.jsonl'), c);
    return await runConfigs(c, dir, progress);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function runConfigs(c: DistBenchConfig, dir: string, progress: (m: string) => void): Promise<DistBenchReport> {
  const rows: DistBenchRow[] = [];
  for (const [processes, threads] of [[1, c.nproc], [c.nproc, 1]] as const) {
    progress(`${processes} process${processes > 1 ? 'es' : ''} x ${threads} thread${threads > 1 ? 's' : ''}, ${c.pairs} pairs x T=${c.seq} per step`);
    const r = await runRanks(c, dir, processes, threads);
    const ms = median(r.timesMs);
    const comm = median(r.commMs);
    rows.push({ processes, threadsPerProcess: threads, timesMs: r.timesMs, medianMs: ms, pairsPerSecond: c.pairs / (ms / 1e3), allreduceMs: comm, allreduceShare: comm / ms, bytesPerStep: median(r.bytes) });
  }
  return { config: c, torchVersion: buildInfo().torchVersion, rows };
}

export function formatDistReport(r: DistBenchReport): string {
  const c = r.config;
  const table = [
    ['', 'step', 'pairs/s', 'allreduce', 'share', 'reduced/step'],
    ...r.rows.map((x) => [
      `${x.processes} process${x.processes > 1 ? 'es' : ''} x ${x.threadsPerProcess} thread${x.threadsPerProcess > 1 ? 's' : ''}`,
      `${(x.medianMs / 1e3).toFixed(2)} s`,
      x.pairsPerSecond.toFixed(2),
      x.processes > 1 ? `${x.allreduceMs.toFixed(0)} ms` : '-',
      x.processes > 1 ? `${(100 * x.allreduceShare).toFixed(1)}%` : '-',
      x.processes > 1 ? `${(x.bytesPerStep / 1e6).toFixed(0)} MB` : '-',
    ]),
  ];
  const widths = table[0].map((_, j) => Math.max(...table.map((row) => row[j].length)));
  const lines = table.map((row) => row.map((cell, j) => (j === 0 ? cell.padEnd(widths[j]) : cell.padStart(widths[j]))).join('   '));
  return [
    `tdpo bench --train --nproc-per-node ${c.nproc}: train() steps of TDPO2 + RMSprop on a GPT-2-small shape, ${c.pairs} pairs x T=${c.seq} (the global batch), fp32, libtorch ${r.torchVersion}, c10d Gloo on loopback; median of ${c.runs} steps after a warm-up step`,
    '',
    ...lines,
    '',
    'allreduce: rank 0\'s time in the step\'s collectives (the gradient, bucketed at 25 MB, after the backward pass; the statistics); reduced/step: the bytes each rank contributes',
  ].join('\n');
}
