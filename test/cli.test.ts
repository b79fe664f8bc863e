// `tdpo bench` end to end, at a tiny size; the rule that tells a second Ctrl-C from a repeat.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildInfo } from '../lib/index.js';
import { positiveInt } from '../lib/cli/errors.js';
import { workerFromEnv } from '../lib/cli/launch.js';
import { REPEAT_WINDOW_MS, stopSignals } from '../lib/cli/signals.js';

const sdpa = buildInfo().attnImplementations.includes('sdpa');

const cli = path.resolve(__dirname, '..', 'bin', 'tdpo.js');
const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

describe('tdpo bench', () => {
  it('reports every case with finite figures (--json)', () => {
    // V = 50000: each [B, T, V] input is 3.2 MB, fresh pages (mmap) that must raise the peak above
    // the RSS before them. At V = 300 (38 KB) they fitted memory already resident, and the peak
    // could equal the base (seen once in CI: 216952832 twice).
    const r = run(['bench', '--json', '-B', '2', '-T', '8', '-V', '50000', '--runs', '2', '--warmup', '0']);
    expect(r.status, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.config).toMatchObject({ batch: 2, seq: 8, vocab: 50000, runs: 2, variant: 'tdpo2' });
    expect(report.cases).toHaveLength(4);
    for (const c of report.cases) {
      expect(c.timesMs).toHaveLength(2);
      expect(c.medianMs).toBeGreaterThan(0);
      expect(c.peakRssBytes).toBeGreaterThan(c.baseRssBytes);
    }
    for (const x of [report.memcpyGBps, report.speedup.forward, report.speedup.forwardBackward, report.fusedMemoryRatio]) {
      expect(Number.isFinite(x) && x > 0).toBe(true);
    }
  });

  it('prints a table by default', () => {
    const r = run(['bench', '-B', '2', '-T', '4', '-V', '64', '--runs', '1', '--warmup', '0']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/forward\+backward\s+\S+ m?s/);
    expect(r.stdout).toContain('memory-copy bandwidth');
  });

  it('rejects bad flags with one line and exit code 2', () => {
    for (const args of [['bench', '--batch', '3'], ['bench', '--runs', 'x'], ['bench', '--nope'], ['bench', '--variant', 'ipo'], ['bench', '--model', '--device', 'tpu'], ['bench', '--model', '--dtype', 'fp8'], ['frobnicate'], ['demo', '--quick', '--seeds', '1,x'], ['demo', '--quick', '--seeds', '2,2'], ['demo', '--quick', '--seeds=-1'], ['demo', '--quick', '--seeds', '1,,2'], ['demo', '--quick', '--seeds', ''], ['demo', '--quick', '--seeds', '1000000']]) {
      const r = run(args);
      expect(r.status).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^tdpo: /);
    }
  });

  it('refuses a bad demo --set before any stage runs, naming the setting', () => {
    for (const [args, message] of [
      [['--set', 'nope=1'], /--set nope: not a setting --set can change/],
      [['-s', 'lr=0'], /--set lr must be a number > 0/],
      [['--set', 'trainSteps=5'], /trainSteps \(5\) must be a multiple of evalEvery \(8\)/],
      [['--set', 'pairPrompts=5000'], /evalPrompts \+ pairPrompts \(32 \+ 5000\) exceed the \d+ held-out prompts/],
    ] as const) {
      const out = path.join(tmpdir(), `tdpo-never-made-${process.pid}`);
      const r = run(['demo', '--quick', ...args, '--out', out]);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toContain('[2/4]');
      expect(existsSync(out)).toBe(false);
    }
  });

  it('has --help', () => {
    const r = run(['bench', '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Usage: tdpo bench');
  });
});

describe('tdpo bench --model', () => {
  it('reports forward and generation throughput (tiny settings)', () => {
    const r = run(['bench', '--model', '--json', '-B', '1', '-T', '8', '--runs', '1', '--prompt-tokens', '8', '--new-tokens', '3']);
    expect(r.status, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.parameters).toBe(124439808); // GPT-2 small with its tied lm_head
    expect(report.forward.tokensPerSecond).toBeGreaterThan(0);
    expect(report.generate.cachedTokensPerSecond).toBeGreaterThan(0);
    expect(report.generate.uncachedTokensPerSecond).toBeGreaterThan(0);
    expect(report.config).toMatchObject({ device: 'cpu', dtype: 'float32' });
  });

  it('--arch llama: the SmolLM-135M shape (tiny settings)', () => {
    const r = run(['bench', '--model', '--arch', 'llama', '--json', '-B', '1', '-T', '8', '--runs', '1', '--prompt-tokens', '4', '--new-tokens', '2']);
    expect(r.status, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.parameters).toBe(134515008); // SmolLM-135M: tied embeddings, 30 layers, GQA 9/3
    expect(report.forward.gflops).toBeGreaterThan(0);
    expect(report.config.arch).toBe('llama');
  });
});

describe('tdpo bench --train', () => {
  it('reports one configuration, in a child process, with --fused-linear (tiny settings)', () => {
    const r = run(['bench', '--train', '--json', '--pairs', '1', '-T', '8', '--runs', '1', '--fused-linear', 'on', '--chunk-mb', '8', '--threads', '1']);
    expect(r.status, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.config).toMatchObject({ pairs: 1, seq: 8, runs: 1, loss: 'tdpo2', chunkMb: 8, threads: 1, device: 'cpu', dtype: 'float32' });
    expect(report.rows).toHaveLength(1);
    expect(report.rows[0]).toMatchObject({ name: 'fused linear', fusedLinear: true, gradientCheckpointing: false, vsMaterialised: null });
    expect(report.rows[0].pairsPerSecond).toBeGreaterThan(0);
    expect(report.logitsBytes).toBe(2 * 8 * 50257 * 4);
  });

  it.skipIf(buildInfo().cuda)("a refused device is one line of error, not a stack", () => {
    const r = run(['bench', '--train', '--device', 'cuda', '--fused-linear', 'on', '--pairs', '1', '-T', '8', '--runs', '1']);
    expect(r.status).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines.filter((l) => l.startsWith('tdpo: '))).toHaveLength(1);
    expect(lines.filter((l) => /^\s+at /.test(l))).toEqual([]);
    expect(lines[lines.length - 1]).toMatch(/^tdpo: train bench \(fused linear\): options\.device 'cuda'/);
  });

  it('--attn-implementation both runs each configuration with each kernel; the report names the kernel', () => {
    const both = run(['bench', '--train', '--json', '--pairs', '1', '-T', '8', '--runs', '1', '--fused-linear', 'on', '--threads', '1', '--attn-implementation', sdpa ? 'both' : 'eager']);
    expect(both.status, both.stderr).toBe(0);
    const rows = JSON.parse(both.stdout).rows as { name: string; attnImplementation: string; warmupLoss: number }[];
    expect(rows.map((x) => [x.name, x.attnImplementation])).toEqual(sdpa ? [['fused linear, eager', 'eager'], ['fused linear, sdpa', 'sdpa']] : [['fused linear, eager', 'eager']]);
    if (sdpa) expect(Math.abs(rows[1].warmupLoss - rows[0].warmupLoss)).toBeLessThan(1e-4 * Math.max(1, Math.abs(rows[0].warmupLoss)));
    // Without the flag the rows run the build's default and their names stay as they were.
    const plain = run(['bench', '--train', '--pairs', '1', '-T', '8', '--runs', '1', '--fused-linear', 'on', '--threads', '1']);
    expect(plain.status, plain.stderr).toBe(0);
    expect(plain.stdout).toContain(`libtorch ${buildInfo().torchVersion}, ${sdpa ? 'sdpa' : 'eager'} attention;`);
    expect(plain.stdout).toMatch(/^fused linear\s/m);
  });

  it.skipIf(sdpa)('--attn-implementation sdpa on a libtorch without it: one line, the option error', () => {
    const r = run(['bench', '--train', '--pairs', '1', '-T', '8', '--runs', '1', '--fused-linear', 'on', '--attn-implementation', 'sdpa']);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n').pop()).toMatch(/^tdpo: train bench \(fused linear, sdpa\): attnImplementation 'sdpa' needs libtorch >= 2\.3/);
  });

  it('rejects bad --train and --model flags with one line and exit code 2', () => {
    for (const args of [['--attn-implementation', 'eager'], ['--train', '--attn-implementation', 'flash'], ['--model', '--attn-implementation', 'both'], ['--train', '--nproc-per-node', '2', '--attn-implementation', 'eager'], ['--train', '--fused-linear', 'maybe'], ['--train', '--chunk-mb', '0'], ['--train', '--dtype', 'fp8'], ['--fused-linear', 'on'], ['--train', '--nproc-per-node', '2', '--gradient-checkpointing'], ['--train', '--shape', 'gpt5'], ['--shape', 'pythia-1b'], ['--train', '--device', 'tpu'], ['--model', '--arch', 'mamba'], ['--arch', 'llama'], ['--model', '--device', 'cuda:x']]) {
      const r = run(['bench', ...args]);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^tdpo: /);
    }
  });
});

describe('stop signals', () => {
  it('the first, its repeats within REPEAT_WINDOW_MS, then a second request', () => {
    let t = 5_000;
    const kind = stopSignals(() => t);
    expect(kind()).toBe('first');
    t += REPEAT_WINDOW_MS - 1;
    expect(kind()).toBe('repeat');
    t += 1;
    expect(kind()).toBe('again');
    expect(kind()).toBe('again');
  });
});

describe('integer flags and variables', () => {
  it('take decimal digits only, within the safe integers (RANK=0x1 and --nproc-per-node 1e1 were taken)', () => {
    expect(positiveInt('12', '--x')).toBe(12);
    expect(positiveInt('0', '--x', 0)).toBe(0);
    for (const bad of ['0x1', '1e1', ' 2 ', '2.0', '-1', '+3', '', '9007199254740993']) {
      expect(() => positiveInt(bad, '--x', 0), bad).toThrow(expect.objectContaining({ code: 'ERR_TDPO_USAGE', message: `--x must be an integer >= 0, got '${bad}'` }));
    }
    expect(() => workerFromEnv({}, { RANK: '0x1', WORLD_SIZE: '2' })).toThrow(/RANK must be an integer/);
  });
});
