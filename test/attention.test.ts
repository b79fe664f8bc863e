// The attention kernel (ModelOptions.attnImplementation): 'eager' against 'sdpa' (libtorch's
// scaled_dot_product_attention, libtorch >= 2.3: CI's wheel build runs those cases) on every
// golden architecture, with and without padding, in generation and in training; and the train
// step's rule for leaving the key mask out (so that SDPA can take its causal kernel).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildInfo, collatePairs, Model, tokenizePair, TrainStep, validateConfig, defaultConfig, type AttnImplementation } from '../lib/index.js';
import { dirOf, golden, llamaGolden, logitError } from './model-fixtures.js';

const sdpa = buildInfo().attnImplementations.includes('sdpa');
const cases = [...golden.cases, ...llamaGolden.cases];
const tiny = { model_type: 'gpt2', vocab_size: 32, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4 };

describe('attnImplementation', () => {
  it('is eager or sdpa; eager is always there, and the default is sdpa where libtorch has it', async () => {
    expect(buildInfo().attnImplementations).toContain('eager');
    const m = await Model.create(tiny);
    expect(m.attnImplementation).toBe(sdpa ? 'sdpa' : 'eager');
    m.dispose();
    await expect(Model.create(tiny, { attnImplementation: 'flash' as AttnImplementation })).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION', message: expect.stringContaining("'sdpa' or 'eager'") });
    await expect(Model.load(dirOf('gpt2-tiny'), { attnImplementation: 7 as unknown as AttnImplementation })).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION' });
  });

  it.skipIf(sdpa)('sdpa on a libtorch without it is refused, naming the version, by the model and by the config', async () => {
    await expect(Model.create(tiny, { attnImplementation: 'sdpa' })).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION', message: expect.stringMatching(/needs libtorch >= 2\.3; this build has libtorch 1\./) });
    const base = { ...defaultConfig, model: dirOf('gpt2-tiny'), data: { ...defaultConfig.data, train: 'x.jsonl' } };
    expect(() => validateConfig({ ...base, attn_implementation: 'sdpa' })).toThrow(expect.objectContaining({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining("attn_implementation needs libtorch >= 2.3 for 'sdpa'") }));
  });

  it('the config key attn_implementation takes sdpa, eager or null', () => {
    const base = { ...defaultConfig, model: dirOf('gpt2-tiny'), data: { ...defaultConfig.data, train: 'x.jsonl' } };
    for (const v of [...(sdpa ? ['sdpa'] : []), 'eager', null]) expect(() => validateConfig({ ...base, attn_implementation: v as AttnImplementation })).not.toThrow();
    expect(() => validateConfig({ ...base, attn_implementation: 'flash' as AttnImplementation })).toThrow(expect.objectContaining({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining('attn_implementation') }));
  });
});

describe('the train step leaves the key mask out only where no read value depends on it', () => {
  // Two pairs, each side 3 prompt + 3 response tokens or fewer; rows padded with id 0.
  const o = { maxLength: 16, maxPromptLength: 8, truncationMode: 'keep_start' as const };
  const collated = () => collatePairs([tokenizePair([3, 4, 5], [6, 8, 10], [7, 9], 1, o), tokenizePair([11, 12], [14, 16], [13, 15, 17], 1, o)]);
  const withoutMask = <B extends { attentionMask?: Int32Array }>(b: B): B => ({ ...b, attentionMask: undefined });

  async function evaluateBoth(edit: (b: ReturnType<typeof collated>) => ReturnType<typeof collated>) {
    const policy = await Model.create(tiny, { seed: 3, attnImplementation: 'eager' });
    const step = await TrainStep.create(policy, { loss: 'tdpo2' });
    // A policy different from its reference, so that the pair statistics are not all zero.
    await step.accumulate(collated());
    await step.apply(1e-2, 10);
    const batch = edit(collated());
    const [masked, unmasked] = [await step.evaluate(batch), await step.evaluate(withoutMask(batch))];
    policy.dispose();
    return { masked, unmasked };
  }

  it("eager: trailing padding leaves every real position's logits unchanged, bit for bit (why the mask may go)", async () => {
    const m = await Model.create(tiny, { seed: 4, attnImplementation: 'eager' });
    const b = collated();
    const T = b.shape[1];
    const [masked, unmasked] = [await m.forward(b.inputIds, b.shape, { attentionMask: b.attentionMask }), await m.forward(b.inputIds, b.shape)];
    let real = 0;
    for (let row = 0; row < b.shape[0] * T; row++) {
      if (b.attentionMask![row] !== 1) continue;
      real++;
      expect(Array.from(unmasked.logits.subarray(row * 32, row * 32 + 32)), `position ${row}`).toEqual(Array.from(masked.logits.subarray(row * 32, row * 32 + 32)));
    }
    expect(real).toBeLessThan(b.shape[0] * T); // the batch has padding
    m.dispose();
  });

  // The step with the mask left out against the step that keeps it (TDPO_KEY_MASK=always, read at
  // load: a child process each), two updates and their statistics: under eager bit for bit.
  const stepStats = (kernel: AttnImplementation, keep: boolean) => {
    const script = `
      import { buildInfo, collatePairs, Model, tokenizePair, TrainStep } from ${JSON.stringify(path.resolve(__dirname, '..', 'dist', 'esm', 'index.js'))};
      const o = { maxLength: 16, maxPromptLength: 8, truncationMode: 'keep_start' };
      const batch = collatePairs([tokenizePair([3, 4, 5], [6, 8, 10], [7, 9], 1, o), tokenizePair([11, 12], [14, 16], [13, 15, 17], 1, o)]);
      const policy = await Model.create(${JSON.stringify(tiny)}, { seed: 3, attnImplementation: '${kernel}' });
      const step = await TrainStep.create(policy, { loss: 'tdpo2' });
      const out = [];
      for (let i = 0; i < 2; i++) {
        const s = await step.accumulate(batch);
        out.push(s.loss, ...s.chosenKl, ...s.rejectedKl, ...s.chosenLogps, ...s.rejectedLogps, ...s.chosenEntropy);
        await step.apply(1e-2, 10);
      }
      const e = await step.evaluate(batch);
      out.push(e.loss, ...e.chosenRewards, ...e.rejectedRewards);
      console.log(JSON.stringify({ keyMask: buildInfo().trainKeyMask, out }));`;
    const env = { ...process.env, TDPO_KEY_MASK: keep ? 'always' : '' };
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env, encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as { keyMask: string; out: number[] };
  };

  it('the step without the mask equals the step with it: under eager bit for bit, under sdpa to float rounding', () => {
    expect(buildInfo().trainKeyMask).toBe('when-needed');
    for (const kernel of ['eager', ...(sdpa ? ['sdpa' as const] : [])] as AttnImplementation[]) {
      const [dropped, kept] = [stepStats(kernel, false), stepStats(kernel, true)];
      expect([dropped.keyMask, kept.keyMask]).toEqual(['when-needed', 'always']);
      expect(dropped.out.length).toBe(kept.out.length);
      if (kernel === 'eager') expect(dropped.out).toEqual(kept.out);
      else for (let i = 0; i < kept.out.length; i++) expect(Math.abs(dropped.out[i] - kept.out[i]), `[${i}]`).toBeLessThan(1e-5 * Math.max(1, Math.abs(kept.out[i])));
    }
  });

  it('a labelled padding position keeps the mask (its logits are scored)', async () => {
    const { masked, unmasked } = await evaluateBoth((b) => {
      const labels = Int32Array.from(b.labels);
      const T = b.shape[1];
      const row = Array.from({ length: b.shape[0] }, (_, r) => r).find((r) => b.attentionMask![r * T + T - 2] === 0)!;
      expect(row).toBeDefined();
      labels[row * T + T - 1] = 5; // scored by the logits at T - 2, a padding position
      return { ...b, labels };
    });
    expect(masked.loss).not.toBe(unmasked.loss);
  });

  it('left padding keeps the mask (tokens would read padding keys)', async () => {
    const { masked, unmasked } = await evaluateBoth((b) => {
      const [B, T] = b.shape;
      const move = <A extends Int32Array>(a: A, fill: number) => {
        const out = new Int32Array(a.length).fill(fill);
        for (let r = 0; r < B; r++) {
          const n = b.attentionMask!.subarray(r * T, r * T + T).reduce((s, x) => s + x, 0);
          out.set(a.subarray(r * T, r * T + n), r * T + T - n);
        }
        return out;
      };
      return { ...b, inputIds: move(b.inputIds, 0), labels: move(b.labels, -100), attentionMask: move(b.attentionMask!, 0) };
    });
    expect(masked.loss).not.toBe(unmasked.loss);
  });
});

describe.skipIf(!sdpa)('sdpa computes what eager computes', () => {
  for (const c of cases) {
    it(`${c.name}: logits with and without padding, at every position; every logit finite`, async () => {
      const [eager, fused] = await Promise.all([Model.load(dirOf(c.name), { attnImplementation: 'eager' }), Model.load(dirOf(c.name), { attnImplementation: 'sdpa' })]);
      const ids = Int32Array.from(c.inputIds);
      const mask = Int32Array.from(c.attentionMask);
      const a = await eager.forward(ids, c.shape);
      const b = await fused.forward(ids, c.shape);
      const V = a.shape[2];
      expect(logitError(b.logits, a.logits, V)).toBeLessThan(1e-5);
      expect(logitError(b.logits, c.logits, V)).toBeLessThan(1e-4);
      const am = await eager.forward(ids, c.shape, { attentionMask: mask });
      const bm = await fused.forward(ids, c.shape, { attentionMask: mask });
      // Every position, padding too: a query with no key (left padding) is uniform under both.
      expect(logitError(bm.logits, am.logits, V)).toBeLessThan(1e-5);
      expect(logitError(bm.logits, c.maskedLogits, V, (row) => mask[row] === 1)).toBeLessThan(1e-4);
      expect(bm.logits.every(Number.isFinite)).toBe(true);
      eager.dispose();
      fused.dispose();
    });
  }

  it('600 positions, one row left-padded by 540: every logit finite and equal to eager (a masked block of 512 keys made NaN on libtorch 2.3-2.4.0 with an -inf mask)', async () => {
    const config = { ...tiny, n_positions: 1024 };
    const [eager, fused] = await Promise.all([Model.create(config, { seed: 5, attnImplementation: 'eager' }), Model.create(config, { seed: 5, attnImplementation: 'sdpa' })]);
    const T = 600;
    const ids = Int32Array.from({ length: 2 * T }, (_, i) => 2 + ((i * 7) % 30));
    const mask = Int32Array.from({ length: 2 * T }, (_, i) => (i >= T && i - T < 540 ? 0 : 1));
    const a = await eager.forward(ids, [2, T], { attentionMask: mask });
    const b = await fused.forward(ids, [2, T], { attentionMask: mask });
    expect(b.logits.every(Number.isFinite)).toBe(true);
    expect(logitError(b.logits, a.logits, 32)).toBeLessThan(1e-5);
    eager.dispose();
    fused.dispose();
  });

  it('greedy generation, batched prompts of different lengths (left padding, the cache): the same tokens', async () => {
    for (const name of ['gpt2-tiny', 'neox-sequential-sharded', 'llama-gqa-tied']) {
      const [eager, fused] = await Promise.all([Model.load(dirOf(name), { attnImplementation: 'eager' }), Model.load(dirOf(name), { attnImplementation: 'sdpa' })]);
      const prompts = [Int32Array.from([5, 9, 2, 7, 3]), Int32Array.from([4]), Int32Array.from([8, 1, 6])];
      for (const useCache of [true, false]) {
        const a = await eager.generate(prompts, { maxNewTokens: 6, temperature: 0, useCache });
        const b = await fused.generate(prompts, { maxNewTokens: 6, temperature: 0, useCache });
        expect(b.map((x) => Array.from(x)), `${name} useCache ${useCache}`).toEqual(a.map((x) => Array.from(x)));
      }
      eager.dispose();
      fused.dispose();
    }
  });

  it('training: three TDPO2 steps give the same losses and statistics, with the mask left out and kept (left padding, a labelled padding position); checkpointing changes nothing', async () => {
    const o = { maxLength: 16, maxPromptLength: 8, truncationMode: 'keep_start' as const };
    const trailing = collatePairs([tokenizePair([3, 4, 5], [6, 8, 10], [7, 9], 1, o), tokenizePair([11, 12], [14, 16], [13, 15, 17], 1, o)]);
    const [B, T] = trailing.shape;
    const lengths = Array.from({ length: B }, (_, r) => trailing.attentionMask!.subarray(r * T, r * T + T).reduce((s, x) => s + x, 0));
    const leftPad = <A extends Int32Array>(a: A, fill: number) => {
      const out = new Int32Array(a.length).fill(fill);
      for (let r = 0; r < B; r++) out.set(a.subarray(r * T, r * T + lengths[r]), r * T + T - lengths[r]);
      return out;
    };
    const left = { ...trailing, inputIds: leftPad(trailing.inputIds, 0), labels: leftPad(trailing.labels, -100), attentionMask: leftPad(trailing.attentionMask!, 0) };
    const labelledPadding = (() => {
      const labels = Int32Array.from(trailing.labels);
      const row = lengths.findIndex((n) => n <= T - 2);
      expect(row).toBeGreaterThanOrEqual(0);
      labels[row * T + T - 1] = 5; // scored by the logits at T - 2, a padding position: the mask stays
      return { ...trailing, labels };
    })();
    for (const [what, batch] of [['trailing', trailing], ['left', left], ['labelled padding', labelledPadding]] as const) {
      for (const name of ['gpt2-tiny', 'llama-gqa-tied']) {
        const run = async (attnImplementation: AttnImplementation, gradientCheckpointing: boolean) => {
          const policy = await Model.load(dirOf(name), { attnImplementation });
          const step = await TrainStep.create(policy, { loss: 'tdpo2', optimizer: 'adamw', gradientCheckpointing });
          const out: number[] = [];
          for (let i = 0; i < 3; i++) {
            const s = await step.accumulate(batch);
            out.push(s.loss, ...s.chosenKl, ...s.rejectedKl, ...s.chosenLogps, ...s.rejectedLogps);
            await step.apply(1e-3, 10);
          }
          policy.dispose();
          return out;
        };
        const eager = await run('eager', false);
        const fused = await run('sdpa', false);
        const checkpointed = await run('sdpa', true);
        expect(eager.every(Number.isFinite)).toBe(true);
        for (let i = 0; i < eager.length; i++) expect(Math.abs(fused[i] - eager[i]), `${what} ${name} [${i}]`).toBeLessThan(1e-4 * Math.max(1, Math.abs(eager[i])));
        expect(checkpointed, `${what} ${name}`).toEqual(fused);
      }
    }
  });
});
