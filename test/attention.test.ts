// The attention kernel (ModelOptions.attnImplementation): 'eager' against 'sdpa' (libtorch's
// scaled_dot_product_attention, libtorch >= 2.0: CI's wheel build runs those cases) on every
// golden architecture, with and without padding, in generation and in training; and the train
// step's rule for leaving the key mask out (so that SDPA can take its causal kernel).
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

  it.skipIf(sdpa)('sdpa on a libtorch without it is refused, naming the version', async () => {
    await expect(Model.create(tiny, { attnImplementation: 'sdpa' })).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION', message: expect.stringMatching(/needs libtorch >= 2\.0; this build has libtorch 1\./) });
  });

  it('the config key attn_implementation takes sdpa, eager or null', () => {
    const base = { ...defaultConfig, model: dirOf('gpt2-tiny'), data: { ...defaultConfig.data, train: 'x.jsonl' } };
    for (const v of ['sdpa', 'eager', null]) expect(() => validateConfig({ ...base, attn_implementation: v as AttnImplementation })).not.toThrow();
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

  it('right padding, unlabelled: the same numbers, bit for bit, with or without the mask', async () => {
    const { masked, unmasked } = await evaluateBoth((b) => b);
    expect(Array.from(masked.chosenLogps)).toEqual(Array.from(unmasked.chosenLogps));
    expect(masked.loss).toBe(unmasked.loss);
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
    it(`${c.name}: logits with and without padding, on real positions; every padding logit finite`, async () => {
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
      expect(logitError(bm.logits, am.logits, V, (row) => mask[row] === 1)).toBeLessThan(1e-5);
      expect(logitError(bm.logits, c.maskedLogits, V, (row) => mask[row] === 1)).toBeLessThan(1e-4);
      expect(bm.logits.every(Number.isFinite)).toBe(true);
      eager.dispose();
      fused.dispose();
    });
  }

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

  it('training: three TDPO2 steps give the same losses and statistics; checkpointing changes nothing', async () => {
    const o = { maxLength: 16, maxPromptLength: 8, truncationMode: 'keep_start' as const };
    const batch = collatePairs([tokenizePair([3, 4, 5], [6, 8, 10], [7, 9], 1, o), tokenizePair([11, 12], [14, 16], [13, 15, 17], 1, o)]);
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
      for (let i = 0; i < eager.length; i++) expect(Math.abs(fused[i] - eager[i]), `${name} [${i}]`).toBeLessThan(1e-4 * Math.max(1, Math.abs(eager[i])));
      expect(checkpointed).toEqual(fused);
    }
  });
});
