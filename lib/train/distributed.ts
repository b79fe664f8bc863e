// Data-parallel training over c10d (src/distributed: a TCPStore rendezvous hosted by rank 0, Gloo for the
// collectives on CPU tensors, NCCL for those on CUDA tensors where the build has it). The training loop (trainer.ts) stays one loop; it calls these hooks, each of which
// is the single-process behaviour when `dist` is null:
//   - shard: each rank takes a contiguous, disjoint share of every global batch (and of the eval
//     set); the loop weighs its micro-batches by pairs / global batch pairs, so the allreduce SUM of
//     the gradients (native apply) is the global batch's mean, as one process computes it;
//   - reduceStep / reduceEval: the per-pair statistics as sums, added over the ranks in one
//     allreduce, so rank 0 logs what one process would log; the same allreduce carries the ranks'
//     stop requests, so every rank stops after the same step;
//   - onMain: rank 0 alone writes (metrics, samples, checkpoints); the others wait for its result;
//   - fail: names the rank that died or failed, tells the others, leaves the group.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { TrainConfig } from '../config.js';
import { codedError, showValue } from '../errors.js';
import type { Model, ModelDevice } from '../model.js';
import { nativeHandleOf } from '../model.js';
import { native, type NativeProcessGroupHandle } from '../native.js';
import { defaults, resolveOptions } from '../options.js';
import { metricSums, metricsFromSums, type Metrics } from './metrics.js';
import type { MicroStats, TrainStep } from './train-step.js';

export interface DistributedOptions {
  /** This process's rank, in [0, worldSize). Rank 0 hosts the rendezvous and writes the run's files. */
  rank: number;
  worldSize: number;
  /** Where rank 0 listens (default 127.0.0.1). */
  masterAddr?: string;
  /** Default 29500, as torchrun. */
  masterPort?: number;
  /** Bounds the rendezvous, each collective and each wait for a peer (default 30 s). */
  timeoutMs?: number;
}

interface Peer {
  host: string;
  pid: number;
}

/** Keys that may differ between ranks: they cannot change what the run computes. */
const LOCAL_KEYS = ['threads'];

export class Distributed {
  readonly rank: number;
  readonly worldSize: number;
  readonly timeoutMs: number;
  #group: NativeProcessGroupHandle | null;
  #peers: Peer[] = [];
  #seq = 0;

  private constructor(group: NativeProcessGroupHandle, rank: number, worldSize: number, timeoutMs: number) {
    this.#group = group;
    this.rank = rank;
    this.worldSize = worldSize;
    this.timeoutMs = timeoutMs;
  }

  get isMain(): boolean {
    return this.rank === 0;
  }

  /** Joins the group (every rank must call it), learns the peers, and compares config and data digests. */
  /** `device`: where this rank's models live, as the trainer resolved it (cuda:LOCAL_RANK under a launcher). */
  static async start(given: DistributedOptions, c: TrainConfig, device: ModelDevice, log: (line: string) => void): Promise<Distributed> {
    const cuda = /^cuda(?::(\d+))?$/.exec(device);
    const cudaDevice = cuda ? Number(cuda[1] ?? 0) : undefined;
    const backends = native.buildInfo().distributedBackends ?? [];
    if (cudaDevice === undefined && backends.length > 0 && !backends.includes('gloo')) {
      throw codedError('Error', 'ERR_TDPO_DISTRIBUTED', `this build of tdpo has NCCL but not Gloo, and NCCL works on CUDA tensors only: train with device: 'cuda', or on the CPU with a build that has Gloo's headers (device is '${device}')`);
    }
    const d = await Distributed.join(given, cudaDevice);
    try {
      await d.#compareDigests(await runDigest(c));
    } catch (err) {
      throw await d.fail(err);
    }
    if (d.isMain) {
      const backend = cudaDevice !== undefined && backends.includes('nccl') ? 'nccl' : 'gloo';
      log(`distributed: ${d.worldSize} ranks joined at ${given.masterAddr ?? defaults.distributed.masterAddr}:${given.masterPort ?? defaults.distributed.masterPort} (c10d, ${backend})`);
    }
    return d;
  }

  /** Joins the group and learns the peers, with no config to compare (the bench). */
  static async join(given: DistributedOptions, cudaDevice?: number): Promise<Distributed> {
    const o = resolveOptions(defaults.distributed, given, 'distributed');
    if (typeof native.createProcessGroup !== 'function' || !native.buildInfo().distributedBackends?.length) {
      throw codedError('Error', 'ERR_TDPO_DISTRIBUTED', 'this build of tdpo has no distributed backend: rebuild it with Gloo\'s headers (Debian: apt-get install libgloo-dev; then npm rebuild tdpo)');
    }
    const group = await native.createProcessGroup({ ...(o as Required<DistributedOptions>), cudaDevice });
    const d = new Distributed(group, o.rank as number, o.worldSize as number, o.timeoutMs);
    try {
      await d.#exchangePeers();
    } catch (err) {
      throw await d.fail(err);
    }
    return d;
  }

  /** This rank's share of `items`: a contiguous slice; the shares of all ranks partition it in order. */
  shard<T>(items: T[]): T[] {
    const n = items.length;
    return items.slice(Math.floor((this.rank * n) / this.worldSize), Math.floor(((this.rank + 1) * n) / this.worldSize));
  }

  /** Every rank's trainer sums gradients over the group; the policy starts as rank 0's (as DDP). */
  async attach(step: TrainStep, policy: Model): Promise<void> {
    await this.#live().broadcastModel(nativeHandleOf(policy), 0);
    step.setProcessGroup(this.#live());
  }

  async allreduceSum(values: number[]): Promise<number[]> {
    return Array.from(await this.#live().allreduce(Float64Array.from(values), 'sum'));
  }

  /** Rank 0 runs `fn`; every rank gets its result (JSON). The others wait while rank 0 writes. */
  async onMain<T>(label: string, fn: () => T | Promise<T>): Promise<T> {
    const key = `tdpo/main/${++this.#seq}/${label}`;
    if (this.isMain) {
      const value = await fn();
      await this.#live().send(key, JSON.stringify(value ?? null));
      return value;
    }
    // Rank 0 may write a large checkpoint meanwhile; its death ends the wait at once (the store goes).
    return JSON.parse(await this.#live().recv(key, this.#mainWorkMs)) as T;
  }

  /** At the end: rank 0, which hosts the store, leaves only once every rank is done with it. */
  async finish(): Promise<void> {
    const g = this.#live();
    await g.send(`tdpo/finished/${this.rank}`, '1');
    if (this.isMain) for (let r = 1; r < this.worldSize; r++) await g.recv(`tdpo/finished/${r}`, this.#mainWorkMs);
  }

  /** How long a rank waits for another's file work (a checkpoint can be large): 10 timeouts, at least 10 minutes. */
  get #mainWorkMs(): number {
    return Math.max(10 * this.timeoutMs, 600_000);
  }

  /** The collectives so far: calls, bytes, milliseconds (the dist/ metrics of each step). */
  stats(): { calls: number; bytes: number; ms: number } {
    return this.#group?.stats() ?? { calls: 0, bytes: 0, ms: 0 };
  }

  async close(): Promise<void> {
    const g = this.#group;
    this.#group = null;
    await g?.close();
  }

  /**
   * `err` as this rank reports it, after telling the others and leaving the group: a failure here
   * is announced to every rank (with this rank's number and the message); a distributed failure
   * names its cause when it can: another rank's announced failure, or a rank whose process is gone.
   */
  async fail(err: unknown): Promise<Error> {
    const e = (err instanceof Error ? err : new Error(String(err))) as Error & { code?: string };
    const g = this.#group;
    if (!g) return e;
    if (e.code === 'ERR_TDPO_DISTRIBUTED') {
      const cause = await this.#cause(g, e.message);
      if (cause && !e.message.includes(cause)) e.message = `${cause}; ${e.message}`;
    } else {
      await g.abort(`rank ${this.rank} failed: ${e.message}`);
    }
    await this.close();
    return e;
  }

  #live(): NativeProcessGroupHandle {
    if (!this.#group) throw codedError('Error', 'ERR_TDPO_DISTRIBUTED', `rank ${this.rank}: the process group was closed`);
    return this.#group;
  }

  async #exchangePeers(): Promise<void> {
    const g = this.#live();
    await g.send(`tdpo/peer/${this.rank}`, JSON.stringify({ host: hostname(), pid: process.pid }));
    for (let r = 0; r < this.worldSize; r++) this.#peers.push(JSON.parse(await g.recv(`tdpo/peer/${r}`, this.timeoutMs)) as Peer);
  }

  /**
   * Another rank's announced failure, or the ranks on this machine whose process is gone or
   * stopped. After a timeout the store is not asked: its host may be the rank that hangs, and
   * the question would wait out the timeout again.
   */
  async #cause(g: NativeProcessGroupHandle, message: string): Promise<string | null> {
    const timedOut = /timed out|timeout/i.test(message);
    for (let attempt = 0; attempt < 2; attempt++) {
      if (!timedOut) {
        try {
          return await g.recv('tdpo/abort', 20);
        } catch {
          // none announced, or the store is gone with rank 0
        }
      }
      const found = this.#peers
        .map((p, r) => ({ ...p, r, state: p.host === hostname() && r !== this.rank ? processState(p.pid) : 'unknown' }))
        .filter((p) => p.state === 'gone' || p.state === 'stopped');
      if (found.length) return found.map((p) => `rank ${p.r} (pid ${p.pid}) ${p.state === 'gone' ? 'is gone' : 'is stopped (SIGSTOP?)'}`).join(', ');
      // A killed process closes its sockets a moment before it is gone from the process table.
      await new Promise((r) => setTimeout(r, 200));
    }
    return null;
  }

  async #compareDigests(mine: Record<string, string>): Promise<void> {
    const g = this.#live();
    if (this.isMain) await g.send('tdpo/digest/0', JSON.stringify(mine));
    const main = JSON.parse(await g.recv('tdpo/digest/0', this.timeoutMs)) as Record<string, string>;
    if (!this.isMain) {
      const keys = [...new Set([...Object.keys(main), ...Object.keys(mine)])];
      await g.send(`tdpo/digest/${this.rank}`, JSON.stringify(keys.filter((k) => main[k] !== mine[k]).sort()));
    }
    const differ: string[] = [];
    for (let r = 1; r < this.worldSize; r++) {
      const keys = JSON.parse(await g.recv(`tdpo/digest/${r}`, this.timeoutMs)) as string[];
      if (keys.length) differ.push(`rank ${r}: ${keys.join(', ')}`);
    }
    if (differ.length) {
      // Every rank throws this; none needs to announce it.
      throw codedError('RangeError', 'ERR_TDPO_CONFIG', `the ranks' configs or data differ from rank 0's (${differ.join('; ')}): every rank must train the same config on the same data`);
    }
  }
}

/** 'gone' also for a zombie (killed, not yet reaped by its parent); 'stopped' for SIGSTOP. */
function processState(pid: number): 'gone' | 'stopped' | 'running' {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return 'gone';
  }
  try {
    const state = /^\d+ \(.*\) (\w)/.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1];
    return state === 'Z' || state === 'X' ? 'gone' : state === 'T' ? 'stopped' : 'running';
  } catch {
    return 'running';
  }
}

const flatten = (v: unknown, key: string, out: Record<string, string>) => {
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatten(x, key ? `${key}.${k}` : k, out);
  } else {
    out[key] = showValue(v, 200);
  }
};

async function fileDigest(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Every config key's value, and the data files' contents, by name: what every rank must share. */
export async function runDigest(c: TrainConfig): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  flatten(JSON.parse(JSON.stringify(c)) as unknown, '', out);
  for (const k of LOCAL_KEYS) delete out[k];
  for (const [key, file] of [['data.train', c.data.train], ['data.eval', c.data.eval]] as const) {
    if (file && existsSync(file)) out[`${key} (file contents)`] = await fileDigest(file);
  }
  return out;
}

/** One step's metrics over every rank, and whether any rank asked to stop. */
export async function reduceStep(dist: Distributed | null, stats: MicroStats[], sft: boolean, stopRequested: boolean): Promise<{ metrics: Metrics; stop: boolean }> {
  const sums = metricSums(stats, sft);
  if (!dist) return { metrics: metricsFromSums(sums, sft), stop: stopRequested };
  const all = await dist.allreduceSum([...sums, stopRequested ? 1 : 0]);
  return { metrics: metricsFromSums(all, sft), stop: all[all.length - 1] > 0 };
}

/**
 * Distributed runs log this rank's time in the step's collectives (the gradient allreduce and the
 * statistics) and the bytes it reduced, as dist/allreduce_ms and dist/allreduce_bytes: what the
 * bench reports, and what a user watches when the network is the bottleneck.
 */
export function commMetrics(before: { ms: number; bytes: number } | undefined, dist: Distributed | null): Metrics {
  if (!dist || !before) return {};
  const after = dist.stats();
  return { 'dist/allreduce_ms': after.ms - before.ms, 'dist/allreduce_bytes': after.bytes - before.bytes };
}

/** Evaluation metrics from this rank's share of the eval set, reduced over every rank. */
export async function reduceEval(dist: Distributed | null, stats: MicroStats[], sft: boolean): Promise<Metrics> {
  return (await reduceStep(dist, stats, sft, false)).metrics;
}

/** `fn` on rank 0 only (its result on every rank); just `fn` without distribution. */
export async function onMain<T>(dist: Distributed | null, label: string, fn: () => T | Promise<T>): Promise<T> {
  return dist ? dist.onMain(label, fn) : fn();
}
