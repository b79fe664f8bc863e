// Models on a CUDA device: the same numbers as on the CPU and in the golden files, or a clear error
// where this libtorch has no CUDA. The CUDA tests run where buildInfo().cuda is true (a build
// against a CUDA libtorch on a machine with a GPU: scripts/device/check.sh). TDPO_TEST_DEVICE=cpu
// runs them against the CPU instead, which checks the tests themselves, not CUDA.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildInfo, Model, TrainStep } from '../lib/index.js';
import { dirOf, golden, logitError } from './model-fixtures.js';

const dryRun = process.env.TDPO_TEST_DEVICE === 'cpu';
const device = dryRun ? 'cpu' : 'cuda';
const cuda = buildInfo().cuda;
const tmp = mkdtempSync(path.join(tmpdir(), 'tdpo-device-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('without CUDA', () => {
  it.skipIf(cuda)("device 'cuda' is a clear error", async () => {
    await expect(Model.load(dirOf('gpt2-tiny'), { device: 'cuda' })).rejects.toMatchObject({
      code: 'ERR_TDPO_OPTION',
      message: expect.stringContaining('has no CUDA device'),
    });
    await expect(Model.create(JSON.parse(readFileSync(path.join(dirOf('gpt2-tiny'), 'config.json'), 'utf8')), { device: 'cuda' })).rejects.toMatchObject({
      code: 'ERR_TDPO_OPTION',
    });
  });
  it('an unknown device is a clear error', async () => {
    await expect(Model.load(dirOf('gpt2-tiny'), { device: 'tpu' as 'cpu' })).rejects.toMatchObject({
      code: 'ERR_TDPO_OPTION',
      message: expect.stringContaining("options.device must be 'cpu' or 'cuda'"),
    });
  });
});

describe.skipIf(!cuda && !dryRun)(`on ${device}`, () => {
  const prompts = [Int32Array.from([5, 17, 3]), Int32Array.from([40]), Int32Array.from([8, 9, 10, 11, 12])];

  for (const c of golden.cases) {
    it(`${c.name}: logits match the golden files, with and without padding`, async () => {
      const m = await Model.load(dirOf(c.name), { device });
      const ids = Int32Array.from(c.inputIds);
      const plain = await m.forward(ids, c.shape);
      const V = plain.shape[2];
      expect(logitError(plain.logits, c.logits, V)).toBeLessThan(1e-4);
      const mask = Int32Array.from(c.attentionMask);
      const masked = await m.forward(ids, c.shape, { attentionMask: mask });
      expect(logitError(masked.logits, c.maskedLogits, V, (pos) => mask[pos] === 1)).toBeLessThan(1e-4);
      m.dispose();
    });

    it(`${c.name}: sequence log-probs and greedy generation equal the CPU's`, async () => {
      const cpu = await Model.load(dirOf(c.name));
      const dev = await Model.load(dirOf(c.name), { device });
      const ids = Int32Array.from(c.inputIds);
      const labels = Int32Array.from(ids, (x, i) => (i % c.shape[1] < 2 ? -100 : x));
      const a = await cpu.sequenceLogprobs(ids, c.shape, labels);
      const b = await dev.sequenceLogprobs(ids, c.shape, labels);
      for (let i = 0; i < a.sums.length; i++) expect(b.sums[i]).toBeCloseTo(a.sums[i], 4);
      // Left-padded prompts of different lengths, the cache, and EOS stopping a row early.
      const options = { temperature: 0, maxNewTokens: 6 };
      const greedy = await cpu.generate(prompts, options);
      expect(await dev.generate(prompts, options)).toEqual(greedy);
      const eos = greedy[0][2];
      expect(await dev.generate(prompts, { ...options, eosTokenId: eos })).toEqual(await cpu.generate(prompts, { ...options, eosTokenId: eos }));
      expect(await dev.generate(prompts, { ...options, useCache: false })).toEqual(greedy);
      cpu.dispose();
      dev.dispose();
    });
  }

  it('sampling with a seed repeats itself', async () => {
    const m = await Model.load(dirOf('gpt2-tiny'), { device });
    const options = { temperature: 1, topK: 20, topP: 0.9, maxNewTokens: 8, seed: 7 };
    expect(await m.generate(prompts, options)).toEqual(await m.generate(prompts, options));
    m.dispose();
  });

  it('bfloat16 runs and stays within bf16 precision of the golden logits', async () => {
    const c = golden.cases.find((x) => x.name === 'pythia-tiny-bf16')!;
    const m = await Model.load(dirOf(c.name), { device, dtype: 'bfloat16' });
    const { logits, shape } = await m.forward(Int32Array.from(c.inputIds), c.shape);
    expect(logitError(logits, c.logits, shape[2])).toBeLessThan(3e-2);
    m.dispose();
  });

  it('Model.create gives the same weights as on the CPU for a seed; save writes the same file', async () => {
    const config = JSON.parse(readFileSync(path.join(dirOf('neox-sequential-sharded'), 'config.json'), 'utf8'));
    const cpu = await Model.create(config, { seed: 11 });
    const dev = await Model.create(config, { seed: 11, device });
    await cpu.save(path.join(tmp, 'cpu'));
    await dev.save(path.join(tmp, 'dev'));
    expect(readFileSync(path.join(tmp, 'dev', 'model.safetensors')).equals(readFileSync(path.join(tmp, 'cpu', 'model.safetensors')))).toBe(true);
    const back = await Model.load(path.join(tmp, 'dev'), { device });
    const ids = Int32Array.from([1, 2, 3, 4, 5, 6]);
    const a = await cpu.forward(ids, [2, 3]);
    const b = await back.forward(ids, [2, 3]);
    expect(logitError(b.logits, a.logits, a.shape[2])).toBeLessThan(1e-4);
    for (const m of [cpu, dev, back]) m.dispose();
  });

  it('concurrent calls on one model and disposal', async () => {
    const c = golden.cases[0];
    const m = await Model.load(dirOf(c.name), { device });
    const ids = Int32Array.from(c.inputIds);
    const outs = await Promise.all([1, 2, 3, 4].map(() => m.forward(ids, c.shape)));
    for (const o of outs) expect(logitError(o.logits, outs[0].logits, o.shape[2])).toBeLessThan(1e-6);
    m.dispose();
    await expect(m.forward(ids, c.shape)).rejects.toMatchObject({ code: 'ERR_TDPO_DISPOSED' });
  });

  it.skipIf(dryRun)('training refuses a CUDA model, naming the device', async () => {
    const m = await Model.load(dirOf('gpt2-tiny'), { device });
    await expect(TrainStep.create(m)).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION', message: expect.stringContaining("device 'cpu'") });
    m.dispose();
  });
});
