// Data-parallel training on c10d (issue 9), on a tiny GPT-2: N workers x a share of each batch
// compute what one worker computes on the whole batch; both launch styles; a worker killed, a
// port in use, an unreachable master, a worker that never arrives; SIGINT and resume.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInfo, loadConfig, train, type TrainConfig } from '../lib/index.js';
import { freePort, parityPairLines, readWeights } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-dist-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const cli = path.resolve(__dirname, '..', 'bin', 'tdpo.js');

function writeData(name: string, n: number, seed: number): string {
  const f = path.join(dir, name);
  writeFileSync(f, parityPairLines(n, seed));
  return f;
}
const trainFile = writeData('train.jsonl', 20, 1);
const evalFile = writeData('eval.jsonl', 7, 2);

function configObject(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model: { model_type: 'gpt2', vocab_size: 32, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4, eos_token_id: 1 },
    data: { train: trainFile, eval: evalFile, format: 'tokenized', eval_size: 0, drop_last: true },
    loss: { name: 'tdpo2', alpha: 0.5, beta: 0.1 },
    batch_size: 8,
    gradient_accumulation_steps: 1,
    optimizer: 'rmsprop',
    lr: 1e-3,
    warmup_steps: 0,
    max_length: 16,
    max_prompt_length: 8,
    max_steps: 3,
    eval_every: 2,
    save_every: 0,
    threads: 1,
    ...extra,
  };
}
let configs = 0;
function configFile(extra: Record<string, unknown> = {}): string {
  const f = path.join(dir, `config-${++configs}.json`);
  writeFileSync(f, JSON.stringify(configObject(extra)));
  return f;
}
const jsConfig = (out: string, extra: Record<string, unknown> = {}): TrainConfig =>
  loadConfig(null, [], { ...configObject(extra), output_dir: out } as Partial<TrainConfig>);

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}
function start(args: string[], env: Record<string, string> = {}): { child: ChildProcess; done: Promise<Run> } {
  const t0 = Date.now();
  const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<Run>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr, ms: Date.now() - t0 })));
  return { child, done };
}
const runCli = (args: string[], env: Record<string, string> = {}) => start(args, env).done;

/** torchrun's variables, set by the test: one process per rank. */
function startRanks(args: string[], worldSize: number, port: number, extraEnv: Record<string, string> = {}) {
  return Array.from({ length: worldSize }, (_, rank) =>
    start(args, { RANK: String(rank), WORLD_SIZE: String(worldSize), LOCAL_RANK: String(rank), LOCAL_WORLD_SIZE: String(worldSize), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), ...extraEnv }),
  );
}

/** This process's soft limit on open files (Node raises it to the hard limit at start). */
function openFileLimit(): number {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'))!;
  const soft = line.split(/\s{2,}/)[1];
  return soft === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(soft);
}

const readMetrics = (out: string) => readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);

/**
 * ||a - b|| / ||a|| over all the weights. (Not per tensor: a bias that starts at 0 has a tiny norm,
 * and RMSprop's first steps, g / sqrt(mean g^2), turn float32 rounding in a near-zero gradient
 * element into a step of ~10 lr either way, which such a small norm magnifies.)
 */
function weightError(a: string, b: string): number {
  const wa = readWeights(path.join(a, 'model.safetensors'));
  const wb = readWeights(path.join(b, 'model.safetensors'));
  expect([...wb.keys()].sort()).toEqual([...wa.keys()].sort());
  let d = 0;
  let s = 0;
  for (const [name, x] of wa) {
    const y = wb.get(name)!;
    for (let i = 0; i < x.length; i++) {
      d += (x[i] - y[i]) ** 2;
      s += x[i] ** 2;
    }
  }
  return Math.sqrt(d / s);
}

/**
 * Every logged metric but the timing ones agrees within tol * max(1, |value|); dist/ (a distributed
 * run's communication figures) is left out of the comparison.
 */
function expectSameMetrics(a: Record<string, number>[], b: Record<string, number>[], tol = 1e-5): void {
  expect(b.length).toBe(a.length);
  const keys = (m: Record<string, number>) => Object.keys(m).filter((k) => !k.startsWith('dist/')).sort();
  for (let i = 0; i < a.length; i++) {
    expect(keys(b[i])).toEqual(keys(a[i]));
    for (const k of keys(a[i])) {
      if (k === 'examples_per_second') continue;
      expect(Math.abs(a[i][k] - b[i][k]), `line ${i} ${k}: ${a[i][k]} vs ${b[i][k]}`).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(a[i][k])));
    }
  }
}

const rankLines = (text: string, rank: number) =>
  text
    .split('\n')
    .filter((l) => l.startsWith(`[rank ${rank}] `))
    .map((l) => l.slice(`[rank ${rank}] `.length));
const summaryOf = (stdout: string, rank = 0) => JSON.parse(rankLines(stdout, rank).find((l) => l.startsWith('{'))!) as { steps: number; stopped: boolean; outputDir: string };

// Every test here runs ranks on the CPU, over Gloo. A build against PyTorch's CUDA wheel has NCCL but
// no Gloo (the wheel ships no Gloo headers): there they skip, and test/device.test.ts runs NCCL.
const gloo = buildInfo().distributedBackends.includes('gloo');
const debianLibtorch = buildInfo().torchVersion.startsWith('1.13');

describe('buildInfo', () => {
  it('lists the distributed backends: Gloo in every build against Debian\'s libtorch (libgloo-dev)', () => {
    for (const b of buildInfo().distributedBackends) expect(['gloo', 'nccl']).toContain(b);
    if (debianLibtorch) expect(buildInfo().distributedBackends).toEqual(['gloo']);
  });
});

describe.skipIf(!gloo)('data-parallel runs equal one process', () => {
  const cases = [
    // 3 steps of 8 pairs: each of 2 workers takes 4.
    { name: 'TDPO2 + RMSprop, 3 steps', extra: { samples: 2, sample_max_new_tokens: 4 } },
    // 20 pairs, batches of 6 (micro-batches of 3) and a last batch of 2: 1 pair per worker.
    { name: 'gradient accumulation and an uneven last batch (drop_last false)', extra: { batch_size: 6, gradient_accumulation_steps: 2, max_steps: 4, data: { train: trainFile, eval: evalFile, format: 'tokenized', eval_size: 0, drop_last: false } } },
  ];
  for (const [i, c] of cases.entries()) {
    it(`${c.name}: 2 workers x half the batch == 1 worker x the whole (--nproc-per-node, and torchrun's variables)`, async () => {
      const cfg = configFile(c.extra);
      const one = path.join(dir, `one-${i}`);
      const launched = path.join(dir, `launched-${i}`);
      const envd = path.join(dir, `env-${i}`);
      const single = await runCli(['train', '-c', cfg, '--set', `output_dir=${one}`]);
      expect(single.code, single.stderr).toBe(0);
      const viaLauncher = await runCli(['train', '-c', cfg, '--set', `output_dir=${launched}`, '--nproc-per-node', '2']);
      expect(viaLauncher.code, viaLauncher.stderr).toBe(0);
      expect(viaLauncher.stderr).toMatch(/\[rank 0\] distributed: 2 ranks joined/);
      const ranks = await Promise.all(startRanks(['train', '-c', cfg, '--set', `output_dir=${envd}`], 2, await freePort()).map((r) => r.done));
      for (const r of ranks) expect(r.code, r.stderr).toBe(0);

      for (const out of [launched, envd]) {
        expectSameMetrics(readMetrics(one), readMetrics(out));
        expect(weightError(path.join(one, 'final'), path.join(out, 'final'))).toBeLessThanOrEqual(1e-5);
      }
      // Rank 0 alone wrote the run; the evaluations were reduced over both ranks.
      expect(readMetrics(launched).filter((m) => 'eval/loss' in m)).toHaveLength(c.extra.max_steps === 4 ? 2 : 1);
      if (c.extra.samples) {
        const samples = (out: string) => readFileSync(path.join(out, 'samples.jsonl'), 'utf8').trim().split('\n');
        expect(samples(launched)).toHaveLength(samples(one).length);
      }
    }, 120_000);
  }

  it('from JS: train(config, { distributed }) on two ranks in one process', async () => {
    const port = await freePort();
    const one = path.join(dir, 'js-one');
    const two = path.join(dir, 'js-two');
    await train(jsConfig(one));
    const results = await Promise.all([0, 1].map((rank) => train(jsConfig(two), { distributed: { rank, worldSize: 2, masterPort: port, timeoutMs: 10_000 } })));
    expect(results.map((r) => r.steps)).toEqual([3, 3]);
    expectSameMetrics(readMetrics(one), readMetrics(two));
    expect(weightError(path.join(one, 'final'), path.join(two, 'final'))).toBeLessThanOrEqual(1e-5);
    // A distributed run logs its communication per step: at least every float32 gradient, summed.
    const params = [...readWeights(path.join(one, 'final', 'model.safetensors')).values()].reduce((n, t) => n + t.length, 0);
    for (const m of readMetrics(two).filter((x) => 'loss' in x)) {
      expect(m['dist/allreduce_bytes']).toBeGreaterThanOrEqual(4 * params);
      expect(m['dist/allreduce_ms']).toBeGreaterThan(0);
    }
    expect(readMetrics(one).some((x) => Object.keys(x).some((k) => k.startsWith('dist/')))).toBe(false);
  });
});

// torchrun's agent hosts the rendezvous store itself (TORCHELASTIC_USE_AGENT_STORE), and its store
// speaks the wire protocol of its own libtorch: so TDPO_TORCHRUN names a torchrun of the libtorch
// this build links. scripts/check-libtorch-wheel.js sets it for the build against the PyTorch wheel
// in .venv-interop (CI runs that); Debian's torch 1.13 torchrun needs patching under Python 3.11.
const torchrun = process.env.TDPO_TORCHRUN;
describe.skipIf(!gloo || !torchrun)('under torchrun (TDPO_TORCHRUN)', () => {
  const underTorchrun = (cfg: string, out: string, rdzv: string[]) =>
    new Promise<Run>((resolve) => {
      const child = spawn(torchrun!, [...rdzv, '--nproc-per-node', '2', '--no-python', process.execPath, cli, 'train', '-c', cfg, '--set', `output_dir=${out}`], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr, ms: 0 }));
    });
  it('torchrun --standalone and with --master-port: 2 workers train as the launcher\'s 2 do, rank 0 joining the agent\'s store', async () => {
    const cfg = configFile({});
    const launched = path.join(dir, 'torchrun-launcher');
    const viaLauncher = await runCli(['train', '-c', cfg, '--set', `output_dir=${launched}`, '--nproc-per-node', '2']);
    expect(viaLauncher.code, viaLauncher.stderr).toBe(0);
    for (const [name, rdzv] of [['standalone', ['--standalone']], ['static', ['--master-port', String(await freePort())]]] as const) {
      const out = path.join(dir, `torchrun-${name}`);
      const r = await underTorchrun(cfg, out, [...rdzv]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/distributed: 2 ranks joined/);
      expectSameMetrics(readMetrics(launched), readMetrics(out));
      expect(weightError(path.join(launched, 'final'), path.join(out, 'final'))).toBeLessThanOrEqual(1e-6);
    }
  }, 120_000);
});

describe.skipIf(!gloo)('faults: a clear coded error within the timeout, never a hang', () => {
  let busy: Server;
  let busyPort = 0;
  beforeAll(async () => {
    busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, () => resolve()));
    busyPort = (busy.address() as { port: number }).port;
  });
  afterAll(() => busy.close());
  const reject = async (rank: number, worldSize: number, port: number, name: string) => {
    const t0 = Date.now();
    const err = (await train(jsConfig(path.join(dir, name)), { distributed: { rank, worldSize, masterPort: port, timeoutMs: 2_000 } }).catch((e: unknown) => e)) as Error & { code?: string };
    return { err, ms: Date.now() - t0 };
  };

  it('the master port in use', async () => {
    const { err, ms } = await reject(0, 2, busyPort, 'busy');
    expect(err.code).toBe('ERR_TDPO_DISTRIBUTED');
    // c10d's own words: 'Address already in use' (libtorch 1.13), 'address already in use' (2.13).
    expect(err.message).toMatch(new RegExp(`rank 0: the rendezvous server at 127.0.0.1:${busyPort}.*address already in use`, 'i'));
    expect(ms).toBeLessThan(2_000);
  });

  it('the master unreachable', async () => {
    const { err, ms } = await reject(1, 2, await freePort(), 'unreachable');
    expect(err.code).toBe('ERR_TDPO_DISTRIBUTED');
    expect(err.message).toMatch(/rank 1: cannot join the rendezvous at 127\.0\.0\.1:\d+/);
    expect(ms).toBeLessThan(5_000);
  });

  // Another service on MASTER_PORT. One that spoke first made c10d 1.13's client thread abort the
  // process (std::terminate); one that never answers held the rank past any timeout.
  const otherService = async (onConnection: (socket: import('node:net').Socket) => void, name: string, rank = 1) => {
    const sockets: import('node:net').Socket[] = [];
    const srv = createServer((c) => {
      sockets.push(c);
      c.on('error', () => {});
      onConnection(c);
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', () => resolve()));
    try {
      return await reject(rank, 2, (srv.address() as { port: number }).port, name);
    } finally {
      for (const c of sockets) c.destroy();
      srv.close();
    }
  };
  it('another service on MASTER_PORT that sends first, or closes: refused at once', async () => {
    for (const [name, serve] of [['speaks', (c: import('node:net').Socket) => c.write(Buffer.alloc(4096))], ['closes', (c: import('node:net').Socket) => c.end()]] as const) {
      const { err, ms } = await otherService(serve, `other-${name}`);
      expect(err.code, name).toBe('ERR_TDPO_DISTRIBUTED');
      expect(err.message).toMatch(/rank 1: cannot join the rendezvous at 127\.0\.0\.1:\d+: what listens there sends data or closes the connection unasked/);
      expect(ms).toBeLessThan(1_500);
    }
  });
  it('another service on MASTER_PORT that never answers: refused at the timeout', async () => {
    const silent = await otherService(() => {}, 'other-silent');
    expect(silent.err.code).toBe('ERR_TDPO_DISTRIBUTED');
    expect(silent.err.message).toMatch(/rank 1: cannot join the rendezvous at .*: no answer to a store request within 2000 ms/);
    expect(silent.ms).toBeGreaterThanOrEqual(1_900);
    expect(silent.ms).toBeLessThan(4_000);
  });

  it('a worker that never arrives', async () => {
    const { err, ms } = await reject(0, 3, await freePort(), 'never');
    expect(err.code).toBe('ERR_TDPO_DISTRIBUTED');
    expect(err.message).toMatch(/timed out after 2000 ms waiting for every rank to join .*ranks 1, 2 never arrived \(1 of 3 joined\)/);
    expect(ms).toBeLessThan(4_000);
  });

  it('a large WORLD_SIZE: the rendezvous still ends at the timeout (200,000 took 23 s for 5 s)', async () => {
    // As large as this process's descriptor limit allows rank 0 (3 per peer, below).
    const world = Math.min(200_000, Math.floor((openFileLimit() - 200) / 3));
    expect(world).toBeGreaterThan(10);
    const { err, ms } = await reject(0, world, await freePort(), 'huge-world');
    expect(err.message).toMatch(new RegExp(`ranks 1, 2, 3, 4, 5, 6, 7, 8 and ${world - 9} more never arrived \\(1 of ${world} joined\\)`));
    expect(ms).toBeLessThan(4_000);
  });

  it('a world beyond the descriptor limit (ulimit -n) is refused at once, naming the numbers, on rank 0 and the others', async () => {
    // c10d's threads open the peers' connections, and an EMFILE there aborted the process
    // (ulimit -n 40 with 8 workers): now each rank counts before the rendezvous.
    const limit = openFileLimit();
    // Rank 0 hosts the store: about 3 descriptors per peer; the others about 1.
    for (const [rank, world] of [[0, Math.ceil(limit / 3) + 10], [1, limit + 10]]) {
      const { err, ms } = await reject(rank, world, await freePort(), `fd-${rank}`);
      expect(err.code).toBe('ERR_TDPO_DISTRIBUTED');
      expect(err.message).toMatch(new RegExp(`rank ${rank}: too few file descriptors for a world of ${world}: \\d+ are open, .* the limit \\(ulimit -n\\) is ${limit}: raise it to at least \\d+ or run fewer processes`));
      expect(ms).toBeLessThan(1_500);
    }
  });

  it("ranks whose configs differ stop, naming the keys", async () => {
    const port = await freePort();
    const errs = (await Promise.all(
      [0, 1].map((rank) =>
        train(jsConfig(path.join(dir, `digest-${rank}`), rank === 1 ? { loss: { name: 'tdpo2', alpha: 0.5, beta: 0.2 }, threads: 2 } : {}), { distributed: { rank, worldSize: 2, masterPort: port, timeoutMs: 5_000 } }).catch((e: unknown) => e),
      ),
    )) as Array<Error & { code?: string }>;
    for (const e of errs) {
      expect(e.code).toBe('ERR_TDPO_CONFIG');
      // output_dir differs too; threads may differ.
      expect(e.message).toMatch(/rank 1: loss\.beta, output_dir\)/);
    }
  });

  it('kill -9 of a worker: the other exits non-zero naming it within the timeout; checkpoints stay whole; --resume continues', async () => {
    const out = path.join(dir, 'killed');
    const cfg = configFile({ max_steps: 400, save_every: 5, eval_every: 0, data: { train: trainFile, eval: null, format: 'tokenized', eval_size: 0, drop_last: true } });
    const ranks = startRanks(['train', '-c', cfg, '--set', `output_dir=${out}`, '--dist-timeout', '5'], 2, await freePort());
    // Until a few checkpoints exist, then kill rank 1 in the middle of whatever it does.
    while (!existsSync(path.join(out, 'step-10'))) await new Promise((r) => setTimeout(r, 20));
    const killedAt = Date.now();
    ranks[1].child.kill('SIGKILL');
    const [r0, r1] = await Promise.all(ranks.map((r) => r.done));
    expect(r1.signal).toBe('SIGKILL');
    expect(r0.code, r0.stderr).toBe(1);
    expect(r0.stderr).toMatch(new RegExp(`rank 1 \\(pid ${ranks[1].child.pid}\\) is gone`));
    expect(Date.now() - killedAt).toBeLessThan(5_000);
    // Every step-N/ is complete (a save that was cut short is only a temporary folder).
    const steps = readdirSync(out).filter((n) => /^step-\d+$/.test(n));
    expect(steps.length).toBeGreaterThan(0);
    for (const s of steps) expect(existsSync(path.join(out, s, 'trainer.json')), s).toBe(true);
    const last = Math.max(...steps.map((s) => Number(s.slice(5))));

    const resumed = await runCli(['train', '-c', cfg, '--set', `output_dir=${out}`, '--set', 'max_steps=' + (last + 10), '--resume', '--allow-change', 'max_steps', '--nproc-per-node', '2']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toContain(`[rank 0] resuming from ${path.join(out, `step-${last}`)} (step ${last})`);
    expect(summaryOf(resumed.stdout).steps).toBe(last + 10);
  }, 120_000);

  it('a hung rank 0 (SIGSTOP, the rendezvous host): rank 1 fails within the timeout, naming it', async () => {
    const out = path.join(dir, 'hung');
    const cfg = configFile({ max_steps: 2000, save_every: 0, eval_every: 0 });
    const ranks = startRanks(['train', '-c', cfg, '--set', `output_dir=${out}`, '--dist-timeout', '3'], 2, await freePort());
    while (!existsSync(path.join(out, 'metrics.jsonl')) || readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').split('\n').length < 3) await new Promise((r) => setTimeout(r, 20));
    ranks[0].child.kill('SIGSTOP');
    const stoppedAt = Date.now();
    const r1 = await ranks[1].done;
    const took = Date.now() - stoppedAt;
    ranks[0].child.kill('SIGKILL');
    await ranks[0].done;
    expect(r1.code, r1.stderr).toBe(1);
    expect(r1.stderr).toMatch(new RegExp(`rank 0 \\(pid ${ranks[0].child.pid}\\) is stopped.*rank 1: .*Timed out`));
    expect(took).toBeLessThan(6_000);
  }, 60_000);

  it('kill -9 of rank 0 (the rendezvous host): the launcher and rank 1 fail naming it', async () => {
    const out = path.join(dir, 'killed0');
    const cfg = configFile({ max_steps: 400, save_every: 0, eval_every: 0 });
    const launcher = start(['train', '-c', cfg, '--set', `output_dir=${out}`, '--nproc-per-node', '2', '--dist-timeout', '5']);
    while (!existsSync(path.join(out, 'metrics.jsonl')) || readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').split('\n').length < 4) await new Promise((r) => setTimeout(r, 20));
    const ps = await new Promise<string>((resolve) => {
      const p = spawn('ps', ['-o', 'pid=', '--ppid', String(launcher.child.pid)]);
      let s = '';
      p.stdout.on('data', (d) => (s += d));
      p.on('exit', () => resolve(s));
    });
    // The workers by rank, from the RANK the launcher gave each.
    const rankOf = (pid: number) => Number(/(?:^|\0)RANK=(\d+)/.exec(readFileSync(`/proc/${pid}/environ`, 'utf8'))?.[1]);
    const pids = ps.trim().split('\n').map(Number).sort((a, b) => rankOf(a) - rankOf(b));
    expect(pids.map(rankOf)).toEqual([0, 1]);
    const killedAt = Date.now();
    process.kill(pids[0], 'SIGKILL');
    const r = await launcher.done;
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`tdpo: rank 0 (pid ${pids[0]}) was killed by SIGKILL`);
    expect(r.stderr).toMatch(new RegExp(`\\[rank 1\\] tdpo: rank 0 \\(pid ${pids[0]}\\) is gone`));
    expect(Date.now() - killedAt).toBeLessThan(5_000);
  });
});

describe.skipIf(!gloo)('SIGINT and resume', () => {
  const childrenOf = (pid: number) =>
    new Promise<string[]>((resolve) => {
      const p = spawn('ps', ['-o', 'pid=', '--ppid', String(pid)]);
      let s = '';
      p.stdout.on('data', (d) => (s += d));
      p.on('exit', () => resolve(s.trim().split('\n')));
    });
  const gone = (pid: number) => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  };
  // A 2-worker run, once it has logged two steps, and its workers' pids.
  const twoWorkers = async (out: string) => {
    const cfg = configFile({ max_steps: 2000, save_every: 0, eval_every: 0 });
    const launcher = start(['train', '-c', cfg, '--set', `output_dir=${out}`, '--nproc-per-node', '2']);
    while (!existsSync(path.join(out, 'metrics.jsonl')) || readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').split('\n').length < 3) await new Promise((r) => setTimeout(r, 20));
    const pids = (await childrenOf(launcher.child.pid!)).map(Number);
    expect(pids).toHaveLength(2);
    return { launcher, pids };
  };
  // The workers are frozen (SIGSTOP) while the launcher gets its signals, so that the first is
  // not served before the second comes, whatever the machine's speed.
  const frozenWorkers = async (out: string) => {
    const run = await twoWorkers(out);
    for (const pid of run.pids) process.kill(pid, 'SIGSTOP');
    return run;
  };

  it('kill -9 of the launcher: its workers stop together at a step and save it', async () => {
    const out = path.join(dir, 'orphans');
    const { launcher, pids } = await twoWorkers(out);
    launcher.child.kill('SIGKILL');
    await launcher.done;
    const t0 = Date.now();
    while (!pids.every(gone) && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 50));
    expect(pids.every(gone)).toBe(true);
    const steps = readdirSync(out).filter((n) => /^step-\d+$/.test(n));
    expect(steps).toHaveLength(1);
    expect(existsSync(path.join(out, steps[0], 'trainer.json'))).toBe(true);
  }, 120_000);

  it('a second Ctrl-C to the launcher, a second or more after the first, kills the workers and ends it by SIGINT, not as a failure', async () => {
    const { launcher, pids } = await frozenWorkers(path.join(dir, 'launcher-twice'));
    launcher.child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 1100));
    launcher.child.kill('SIGINT');
    const r = await launcher.done;
    expect({ code: r.code, signal: r.signal }, r.stderr).toEqual({ code: null, signal: 'SIGINT' });
    expect(r.stderr).toContain('tdpo: SIGINT again: stopping the workers now, without a checkpoint');
    expect(r.stderr).toContain('tdpo: stopped by SIGINT: every worker has exited');
    expect(r.stderr).not.toMatch(/was killed by|the run failed/);
    expect(pids.every(gone)).toBe(true);
  }, 60_000);

  it('two Ctrl-Cs to the launcher within a second are one: the workers stop together with a checkpoint', async () => {
    const out = path.join(dir, 'launcher-repeat');
    const { launcher, pids } = await frozenWorkers(out);
    launcher.child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 50));
    launcher.child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 100)); // both served by the launcher before the workers go on
    for (const pid of pids) process.kill(pid, 'SIGCONT');
    const r = await launcher.done;
    expect(r.code, r.stderr).toBe(0);
    const s0 = summaryOf(r.stdout, 0);
    expect(s0.stopped).toBe(true);
    expect(summaryOf(r.stdout, 1).steps).toBe(s0.steps);
    expect(existsSync(path.join(out, `step-${s0.steps}`, 'trainer.json'))).toBe(true);
  }, 60_000);

  it('a 2-worker run resumed by 1 worker equals 1 worker throughout (batch_size is global)', async () => {
    const cfg = configFile({ max_steps: 4, eval_every: 0 });
    const one = path.join(dir, 'ws-one');
    const mixed = path.join(dir, 'ws-mixed');
    expect((await runCli(['train', '-c', cfg, '--set', `output_dir=${one}`])).code).toBe(0);
    const first = await runCli(['train', '-c', cfg, '--set', `output_dir=${mixed}`, '--set', 'max_steps=2', '--nproc-per-node', '2']);
    expect(first.code, first.stderr).toBe(0);
    const second = await runCli(['train', '-c', cfg, '--set', `output_dir=${mixed}`, '--resume', '--allow-change', 'max_steps']);
    expect(second.code, second.stderr).toBe(0);
    expectSameMetrics(readMetrics(one), readMetrics(mixed));
    expect(weightError(path.join(one, 'final'), path.join(mixed, 'final'))).toBeLessThanOrEqual(1e-5);
  });

  it('a 2-worker run stopped with SIGINT and resumed equals an uninterrupted 2-worker run', async () => {
    const cfg = configFile({ max_steps: 60, save_every: 0, eval_every: 20 });
    const whole = path.join(dir, 'whole');
    const cut = path.join(dir, 'cut');
    // Short options with their values inline reach the workers as given (they once got -s=KEY=V).
    const uninterrupted = await runCli(['train', `-c${cfg}`, `-soutput_dir=${whole}`, '--nproc-per-node', '2']);
    expect(uninterrupted.code, uninterrupted.stderr).toBe(0);

    const launcher = start(['train', '-c', cfg, '--set', `output_dir=${cut}`, '--nproc-per-node', '2']);
    while (!existsSync(path.join(cut, 'metrics.jsonl')) || readFileSync(path.join(cut, 'metrics.jsonl'), 'utf8').split('\n').length < 3) await new Promise((r) => setTimeout(r, 10));
    launcher.child.kill('SIGINT');
    const stopped = await launcher.done;
    expect(stopped.code, stopped.stderr).toBe(0);
    const s0 = summaryOf(stopped.stdout, 0);
    expect(s0.stopped).toBe(true);
    expect(s0.steps).toBeLessThan(60);
    // Both ranks stopped after the same step.
    expect(summaryOf(stopped.stdout, 1).steps).toBe(s0.steps);
    expect(existsSync(path.join(cut, `step-${s0.steps}`, 'trainer.json'))).toBe(true);

    const resumed = await runCli(['train', '-c', cfg, '--set', `output_dir=${cut}`, '--resume', '--nproc-per-node', '2']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(summaryOf(resumed.stdout).steps).toBe(60);
    expectSameMetrics(readMetrics(whole), readMetrics(cut), 1e-6);
    expect(weightError(path.join(whole, 'final'), path.join(cut, 'final'))).toBeLessThanOrEqual(1e-6);
  }, 120_000);
});

// PyTorch's CUDA wheels ship no Gloo headers, so a build against one has NCCL alone (runs there only).
describe.skipIf(gloo || !buildInfo().distributedBackends.includes('nccl'))('a build with NCCL alone', () => {
  it('refuses a CPU run up front: NCCL works on CUDA tensors only', async () => {
    const run = train(jsConfig(path.join(dir, 'nccl-only-cpu')), { distributed: { rank: 0, worldSize: 1, masterPort: await freePort() } });
    await expect(run).rejects.toMatchObject({ code: 'ERR_TDPO_DISTRIBUTED', message: expect.stringContaining('NCCL but not Gloo') });
  });
});
