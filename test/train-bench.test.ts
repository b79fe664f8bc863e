// `tdpo bench --train`'s functions on a tiny GPT-2 shape: three configurations, each in a child
// process (dist/esm/bench/train-child.js, so dist/ must be built: npm run build:ts, or npm test).
import { existsSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { defaultTrainBenchConfig, formatTrainReport, runTrainBench, type TrainBenchConfig } from '../lib/bench/train-bench.js';

const tiny = { model_type: 'gpt2', vocab_size: 64, n_positions: 64, n_embd: 32, n_layer: 2, n_head: 2, activation_function: 'gelu_new', layer_norm_epsilon: 1e-5 };
const config: TrainBenchConfig = { ...defaultTrainBenchConfig, model: tiny, pairs: 1, seq: 8, runs: 1, threads: 1, chunkMb: 1 };

beforeAll(() => {
  const child = path.resolve(__dirname, '..', 'dist', 'esm', 'bench', 'train-child.js');
  if (!existsSync(child)) throw new Error(`${child} is missing: build dist/ with npm run build:ts`);
});

describe('train bench', () => {
  it('runs materialised, fused linear and fused linear + checkpointing, with ratios to the materialised row', async () => {
    const r = await runTrainBench(config);
    expect(r.rows.map((x) => [x.name, x.fusedLinear, x.gradientCheckpointing])).toEqual([
      ['materialised logits', false, false],
      ['fused linear', true, false],
      ['fused linear + checkpointing', true, true],
    ]);
    expect(r.config).toMatchObject({ pairs: 1, seq: 8, runs: 1, threads: 1, device: 'cpu', dtype: 'float32', chunkMb: 1, loss: 'tdpo2', optimizer: 'rmsprop' });
    // Without --chunk-mb, the report names the chunk the step used: the CPU's default.
    expect(defaultTrainBenchConfig.chunkMb).toBeNull();
    const byDefault = await runTrainBench({ ...config, chunkMb: null, variants: [{ fusedLinear: true, gradientCheckpointing: false }] });
    expect(byDefault.config.chunkMb).toBe(128);
    expect(formatTrainReport(byDefault)).toContain('fused linear chunk: 128 MB of logits');
    expect(r.logitsBytes).toBe(2 * 1 * 8 * 64 * 4);
    expect(r.parameters).toBeGreaterThan(0);
    expect(r.torchVersion).toMatch(/^\d+\.\d+/);
    for (const x of r.rows) {
      expect(x.timesMs).toHaveLength(1);
      expect(x.medianMs).toBeGreaterThan(0);
      expect(x.pairsPerSecond).toBeCloseTo(1 / (x.medianMs / 1e3), 6);
      expect(x.tokensPerSecond).toBeCloseTo(16 / (x.medianMs / 1e3), 3);
      expect(x.rssBeforeBytes).toBeGreaterThan(0);
      expect(x.peakRssBytes).toBeGreaterThanOrEqual(x.rssBeforeBytes);
      expect(x.peakAboveBeforeBytes).toBe(x.peakRssBytes - x.rssBeforeBytes);
      expect(Number.isFinite(x.warmupLoss)).toBe(true);
      // The same weights and batch: the same loss, however the step computes it.
      expect(Math.abs(x.warmupLoss - r.rows[0].warmupLoss)).toBeLessThan(1e-4 * Math.max(1, Math.abs(r.rows[0].warmupLoss)));
      expect(x.vsMaterialised).not.toBeNull();
      expect(x.vsMaterialised!.time).toBeCloseTo(x.medianMs / r.rows[0].medianMs, 9);
      expect(x.vsMaterialised!.peakRss).toBeCloseTo(r.rows[0].peakRssBytes / x.peakRssBytes, 9);
    }
    expect(r.rows[0].vsMaterialised).toEqual({ time: 1, peakRss: 1, peakDevice: null });

    const text = formatTrainReport(r);
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^tdpo bench --train: .*TDPO2 \+ RMSprop.*n_layer=2, n_embd=32, n_head=2 .*V=64.*float32 on cpu, 1 thread, libtorch /);
    expect(lines[1]).toContain('one [B, T, V] float32 tensor (B=2, T=8, V=64): 4.1 kB');
    expect(text).toMatch(/^materialised logits\s.*\s1\.00\s+1\.00$/m);
    expect(text).toMatch(/^fused linear \+ checkpointing\s/m);
    expect(text).toContain('peak RSS ÷');
  });

  // With TDPO_CPU_CACHE_MB=0 the allocator counts nothing (the lines say so instead).
  it.skipIf(process.env.TDPO_CPU_CACHE_MB === '0')('passes each step phase\'s allocator peak through with TDPO_MEMORY_TRACE=1', async () => {
    const written: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((d: string | Uint8Array) => {
      written.push(String(d));
      return true;
    });
    const before = process.env.TDPO_MEMORY_TRACE;
    process.env.TDPO_MEMORY_TRACE = '1';
    try {
      // A vocabulary of 8192 x 128 float32: 4 MiB tensors, which the caching allocator counts (>= 1 MiB).
      await runTrainBench({ ...config, model: { ...tiny, vocab_size: 8192, n_embd: 128 }, variants: [{ fusedLinear: true, gradientCheckpointing: false }] });
    } finally {
      if (before === undefined) delete process.env.TDPO_MEMORY_TRACE;
      else process.env.TDPO_MEMORY_TRACE = before;
      spy.mockRestore();
    }
    const lines = written.join('').split('\n').filter((l) => l.startsWith('tdpo memory: '));
    const parsed = lines.map((l) => {
      const m = /^tdpo memory: (.+?)\s+peak\s+([\d.]+) GB live, at its end\s+([\d.]+) GB; highest so far\s+([\d.]+) GB$/.exec(l);
      expect(m, l).not.toBeNull();
      return { phase: m![1], peak: Number(m![2]), end: Number(m![3]), highest: Number(m![4]) };
    });
    // Each line ends a phase: the warm-up step and the timed one (runs: 1).
    const step = ['reference forward', 'policy forward', 'loss', 'backward', 'optimizer'];
    expect(parsed.map((x) => x.phase)).toEqual(['start-up', ...step, 'between steps', ...step]);
    for (const x of parsed) {
      expect(x.peak).toBeGreaterThanOrEqual(x.end);
      expect(x.highest).toBeGreaterThanOrEqual(x.peak);
    }
    // Between steps at least the policy's and the reference's 4 MiB embeddings are held (and
    // RMSprop's state for it): counted, so the figures are the allocator's.
    expect(parsed.find((x) => x.phase === 'between steps')!.peak).toBeGreaterThan(0.008);
  });

  it('runs one configuration alone, without ratios when the materialised row did not run', async () => {
    const r = await runTrainBench({ ...config, variants: [{ fusedLinear: true, gradientCheckpointing: true }] });
    expect(r.rows).toHaveLength(1);
    expect(r.rows[0]).toMatchObject({ name: 'fused linear + checkpointing', vsMaterialised: null });
    expect(formatTrainReport(r)).not.toContain('time ×');
  });

  it("rethrows a child's error with its message and code", async () => {
    await expect(runTrainBench({ ...config, model: { ...tiny, n_layer: 0 }, variants: [{ fusedLinear: false, gradientCheckpointing: false }] })).rejects.toMatchObject({
      code: 'ERR_TDPO_CONFIG',
      message: expect.stringMatching(/^train bench \(materialised logits\): config\.n_layer must be a positive integer/),
    });
  });

  it('refuses a sequence longer than the model', async () => {
    await expect(runTrainBench({ ...config, seq: 65 })).rejects.toThrow(/positions \(64\)/);
  });
});
