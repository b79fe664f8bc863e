// Data-parallel runs from the command line, as torchrun: `tdpo train --nproc-per-node N` starts N
// workers of this same command itself, and a worker learns its place from torchrun's variables
// (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so
// `torchrun --no-python ... node bin/tdpo.js train` works too.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import packageRoot from '../package-root.cjs';
import type { DistributedOptions } from '../index.js';
import { CliError, numberOf, positiveInt } from './errors.js';
import { dieBy, stopSignals } from './signals.js';

export interface LaunchFlags {
  nprocPerNode?: string;
  nnodes?: string;
  nodeRank?: string;
  masterAddr?: string;
  masterPort?: string;
  distTimeout?: string;
}

/** The launcher's own flags, which a worker does not get. */
export const LAUNCH_OPTIONS = ['nproc-per-node', 'nnodes', 'node-rank', 'master-addr', 'master-port'] as const;

const intFlag = (v: string | undefined, name: string, lo: number, fallback: number, hi = 2 ** 31 - 1): number =>
  v === undefined ? fallback : positiveInt(v, name, lo, hi);

/** Node's timers hold at most 2^31 - 1 ms; a longer --dist-timeout would fire at once. */
const MAX_TIMEOUT_S = 1_000_000;

/** --dist-timeout SECONDS, else TDPO_DIST_TIMEOUT (seconds), else the default (undefined). */
export function timeoutMs(flags: LaunchFlags, env: NodeJS.ProcessEnv = process.env): number | undefined {
  const v = flags.distTimeout ?? env.TDPO_DIST_TIMEOUT;
  if (v === undefined) return undefined;
  const s = numberOf(v);
  if (!(s >= 0.001 && s <= MAX_TIMEOUT_S)) {
    throw new CliError(`--dist-timeout must be a number of seconds in [0.001, ${MAX_TIMEOUT_S}], got '${v}'`);
  }
  return Math.round(s * 1000);
}

/** A worker's place from torchrun's variables, or null when they are not set. */
export function workerFromEnv(flags: LaunchFlags, env: NodeJS.ProcessEnv = process.env): DistributedOptions | null {
  if (env.RANK === undefined && env.WORLD_SIZE === undefined) return null;
  if (env.RANK === undefined || env.WORLD_SIZE === undefined) throw new CliError('RANK and WORLD_SIZE must be set together (torchrun sets both)');
  const rank = intFlag(env.RANK, 'RANK', 0, 0);
  const worldSize = intFlag(env.WORLD_SIZE, 'WORLD_SIZE', 1, 1);
  if (rank >= worldSize) throw new CliError(`RANK ${rank} is not below WORLD_SIZE ${worldSize}`);
  return {
    rank,
    worldSize,
    masterAddr: env.MASTER_ADDR || '127.0.0.1',
    masterPort: intFlag(env.MASTER_PORT, 'MASTER_PORT', 1, 29500, 65535),
    timeoutMs: timeoutMs(flags, env),
  };
}

/** A port that was free a moment ago (for a one-machine run that names none). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function prefixLines(stream: NodeJS.ReadableStream, out: NodeJS.WritableStream, prefix: string): void {
  createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => out.write(`${prefix}${line}\n`));
}

/**
 * Starts this node's workers (`argv`: the train arguments without the launcher's flags) and waits
 * for them. Exit code: 0 when every worker exits 0, else the first failure's. When a worker fails,
 * the others are given the distributed timeout to notice and report it themselves, then stopped.
 * SIGINT / SIGTERM are passed on (each worker saves a checkpoint at the same step and exits); a
 * second one, REPEAT_WINDOW_MS or more after the first, kills them, and once they are gone the
 * launcher dies by that signal, as `tdpo train` on one process does (exit status 130 for SIGINT).
 */
export async function launch(flags: LaunchFlags, argv: string[]): Promise<number> {
  const nproc = intFlag(flags.nprocPerNode, '--nproc-per-node', 1, 1);
  const nnodes = intFlag(flags.nnodes, '--nnodes', 1, 1);
  const nodeRank = intFlag(flags.nodeRank, '--node-rank', 0, 0);
  if (nodeRank >= nnodes) throw new CliError(`--node-rank ${nodeRank} must be below --nnodes ${nnodes}`);
  if (nnodes > 1 && !flags.masterAddr) throw new CliError('--nnodes > 1 needs --master-addr (the host of node rank 0) and the same --master-port on every node');
  const masterAddr = flags.masterAddr ?? '127.0.0.1';
  const masterPort = flags.masterPort !== undefined ? intFlag(flags.masterPort, '--master-port', 1, 29500, 65535) : nnodes === 1 ? await freePort() : 29500;
  const timeout = timeoutMs(flags) ?? 30_000;
  const worldSize = nnodes * nproc;
  const bin = path.join(packageRoot, 'bin', 'tdpo.js');

  type Ended = { code: number | null; signal: NodeJS.Signals | null; error?: Error };
  const workers: Array<{ rank: number; child: ChildProcess; exit: Promise<Ended> }> = [];
  for (let local = 0; local < nproc; local++) {
    const rank = nodeRank * nproc + local;
    const env = {
      ...process.env,
      RANK: String(rank),
      WORLD_SIZE: String(worldSize),
      LOCAL_RANK: String(local),
      LOCAL_WORLD_SIZE: String(nproc),
      MASTER_ADDR: masterAddr,
      MASTER_PORT: String(masterPort),
      TDPO_DIST_TIMEOUT: String(timeout / 1000),
      TDPO_LAUNCHER_PID: String(process.pid),
    };
    const child = spawn(process.execPath, [bin, 'train', ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    // A worker that cannot be started (EMFILE, EAGAIN) has no pipes, and emits 'error', not 'exit'.
    if (child.stdout) prefixLines(child.stdout, process.stdout, `[rank ${rank}] `);
    if (child.stderr) prefixLines(child.stderr, process.stderr, `[rank ${rank}] `);
    const exit = new Promise<Ended>((resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
      child.on('exit', (code, signal) => resolve({ code, signal }));
    });
    workers.push({ rank, child, exit });
  }
  process.stderr.write(`tdpo: started ${nproc} workers (ranks ${nodeRank * nproc}-${nodeRank * nproc + nproc - 1} of ${worldSize}; rendezvous ${masterAddr}:${masterPort})\n`);

  const killLive = (sig: NodeJS.Signals, spare?: (typeof workers)[number]) => {
    for (const w of workers) if (w !== spare && w.child.exitCode === null && w.child.signalCode === null) w.child.kill(sig);
  };
  const kind = stopSignals();
  // The signal of a forced stop: the launcher then ends as a single process does (dieBy), and the
  // workers it killed are not a failure to report.
  let forced: NodeJS.Signals | null = null;
  const forward = (sig: NodeJS.Signals) => {
    const k = kind();
    if (k === 'repeat' || forced) return;
    if (k === 'again') {
      forced = sig;
      process.stderr.write(`tdpo: ${sig} again: stopping the workers now, without a checkpoint; --resume continues from the newest one\n`);
    }
    killLive(k === 'again' ? 'SIGKILL' : sig);
  };
  const onInt = () => forward('SIGINT');
  const onTerm = () => forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);

  let failure: { rank: number; code: number } | null = null;
  let killTimer: NodeJS.Timeout | null = null;
  try {
    await Promise.all(
      workers.map(async (w) => {
        const { code, signal, error } = await w.exit;
        if (code === 0 || (forced && signal === 'SIGKILL')) return;
        if (error) {
          // The others would wait for it until the timeout, in the rendezvous: nothing to save yet.
          process.stderr.write(`tdpo: rank ${w.rank} could not be started: ${error.message}\n`);
          killLive('SIGKILL', w);
        } else {
          const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
          process.stderr.write(`tdpo: rank ${w.rank} (pid ${w.child.pid}) ${how}\n`);
        }
        if (!failure) {
          failure = { rank: w.rank, code: code || 1 };
          // The others notice through c10d (a closed connection at once, a hung peer within the
          // timeout) and report it; whoever is still running after that is stopped.
          killTimer = setTimeout(() => {
            killLive('SIGKILL');
          }, timeout + 5_000);
        }
      }),
    );
  } finally {
    if (killTimer) clearTimeout(killTimer);
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  }
  const stoppedBy = forced as NodeJS.Signals | null;
  if (stoppedBy) {
    process.stderr.write(`tdpo: stopped by ${stoppedBy}: every worker has exited\n`);
    dieBy(stoppedBy);
  }
  const f = failure as { rank: number; code: number } | null;
  if (f) process.stderr.write(`tdpo: the run failed: rank ${f.rank} failed first\n`);
  return f ? f.code : 0;
}

/**
 * In a worker the launcher started: calls `stop` once the launcher is gone (killed with kill -9,
 * so it could not pass a signal on), as if it had sent SIGTERM.
 */
export function watchLauncher(stop: (why: string) => void, env: NodeJS.ProcessEnv = process.env): void {
  const launcher = Number(env.TDPO_LAUNCHER_PID);
  if (!launcher) return;
  // Our output went through the launcher: once it is gone, writes fail with EPIPE, which must not
  // end the worker before it has saved.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {});
  const timer = setInterval(() => {
    if (process.ppid !== launcher) {
      clearInterval(timer);
      stop('the launcher is gone');
    }
  }, 1000);
  timer.unref();
}
