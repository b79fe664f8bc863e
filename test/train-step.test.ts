// The native train step: preference learning on a synthetic set with a learnable rule, SFT,
// gradient accumulation, optimizer state, and the official tokenisation / collation.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { chunkMbOn, collatePairs, Model, tokenizePair, TrainStep, type Objective } from '../lib/index.js';
import { native } from '../lib/native.js';
import { rng } from './helpers.js';

const V = 32;
const EOS = 1;
const config = { model_type: 'gpt2', vocab_size: V, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4 };

// The rule: chosen responses use even tokens, rejected ones odd tokens (ids >= 2).
function pairs(n: number, seed: number) {
  const r = rng(seed);
  const tok = (parity: number) => 2 + 2 * Math.floor(r() * ((V - 2) / 2)) + parity;
  return Array.from({ length: n }, () => {
    const prompt = Array.from({ length: 3 }, () => 2 + Math.floor(r() * (V - 2)));
    const chosen = Array.from({ length: 4 }, () => tok(0));
    const rejected = Array.from({ length: 4 }, () => tok(1));
    return tokenizePair(prompt, chosen, rejected, EOS, { maxLength: 32, maxPromptLength: 16, truncationMode: 'keep_start' });
  });
}

const accuracy = (s: { chosenRewards: Float32Array; rejectedRewards: Float32Array }) =>
  s.chosenRewards.reduce((a, c, i) => a + (c > s.rejectedRewards[i] ? 1 : 0), 0) / s.chosenRewards.length;

describe('preference training learns a rule', () => {
  for (const loss of ['dpo', 'tdpo1', 'tdpo2'] as Objective[]) {
    it(`${loss}: the loss falls and held-out reward accuracy rises well above chance`, async () => {
      const policy = await Model.create(config, { seed: 1 });
      const step = await TrainStep.create(policy, { loss, beta: 0.1, optimizer: 'adamw' });
      const evalBatch = collatePairs(pairs(32, 99));
      const before = await step.evaluate(evalBatch);
      const losses: number[] = [];
      for (let i = 0; i < 40; i++) {
        const s = await step.accumulate(collatePairs(pairs(8, i)));
        losses.push(s.loss);
        await step.apply(3e-3, 10);
      }
      const after = await step.evaluate(evalBatch);
      expect(before.loss).toBeCloseTo(Math.log(2), 5); // policy = reference at the start
      expect(after.loss).toBeLessThan(0.5 * before.loss);
      expect(losses.slice(-5).reduce((a, b) => a + b) / 5).toBeLessThan(losses.slice(0, 5).reduce((a, b) => a + b) / 5);
      expect(accuracy(after)).toBeGreaterThanOrEqual(0.9);
      for (const k of ['chosenKl', 'rejectedKl'] as const) expect(after[k].every((x) => x >= 0 && Number.isFinite(x))).toBe(true);
      policy.dispose();
    });
  }
});

describe('train step mechanics', () => {
  it('SFT lowers the NLL of the labelled tokens', async () => {
    const policy = await Model.create(config, { seed: 2 });
    const step = await TrainStep.create(policy, { loss: 'sft', optimizer: 'adamw' });
    const batch = collatePairs(pairs(8, 5));
    const sftBatch = { ...batch, shape: batch.shape, inputIds: batch.inputIds, labels: batch.labels };
    const first = await step.evaluate(sftBatch);
    for (let i = 0; i < 20; i++) {
      await step.accumulate(sftBatch);
      await step.apply(3e-3, 1);
    }
    expect((await step.evaluate(sftBatch)).loss).toBeLessThan(0.7 * first.loss);
    expect(first.tokens).toBe(16 * 5);
  });

  it('two half-scaled micro-batches update like one batch of both', async () => {
    const a = collatePairs(pairs(2, 7));
    const b = collatePairs(pairs(2, 8));
    const both = collatePairs([...pairs(2, 7), ...pairs(2, 8)]);
    const ids = Int32Array.from([3, 4, 5, 6]);
    const run = async (batches: typeof a[], scale: number) => {
      const policy = await Model.create(config, { seed: 3 });
      const step = await TrainStep.create(policy, { loss: 'tdpo2', optimizer: 'sgd' });
      for (const x of batches) await step.accumulate(x, scale);
      const norm = await step.apply(0.5, 0);
      return { norm, logits: (await policy.forward(ids, [1, 4])).logits };
    };
    const split = await run([a, b], 0.5);
    const joint = await run([both], 1);
    expect(split.norm).toBeCloseTo(joint.norm, 5);
    for (let i = 0; i < joint.logits.length; i++) expect(split.logits[i]).toBeCloseTo(joint.logits[i], 4);
  });

  it('clips the global gradient norm and reports it before clipping', async () => {
    const policy = await Model.create(config, { seed: 4 });
    const step = await TrainStep.create(policy, { loss: 'dpo', optimizer: 'sgd' });
    await step.accumulate(collatePairs(pairs(4, 1)));
    const norm = await step.apply(0, 1e-3);
    expect(norm).toBeGreaterThan(1e-3);
  });

  it('saves and restores optimizer state', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-opt-'));
    try {
      const policy = await Model.create(config, { seed: 5 });
      const step = await TrainStep.create(policy, { loss: 'tdpo2' });
      await step.accumulate(collatePairs(pairs(4, 1)));
      await step.apply(1e-3, 10);
      await step.saveOptimizer(path.join(dir, 'optimizer.pt'));
      await step.loadOptimizer(path.join(dir, 'optimizer.pt'));
      await expect(step.loadOptimizer(path.join(dir, 'missing.pt'))).rejects.toMatchObject({ code: 'ERR_TDPO_CHECKPOINT' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects bad options and batches', async () => {
    const policy = await Model.create(config, { seed: 6 });
    await expect(TrainStep.create(policy, { loss: 'ppo' as Objective })).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION' });
    await expect(TrainStep.create(policy, { optimizer: 'adam' as 'adamw' })).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION' });
    const step = await TrainStep.create(policy, { loss: 'dpo' });
    const bad = collatePairs(pairs(2, 1));
    bad.inputIds[0] = V;
    await expect(step.accumulate(bad)).rejects.toMatchObject({ code: 'ERR_TDPO_INPUT' });
    await expect(step.apply(-1, 1)).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION' });
  });
});

describe('tokenizePair / collatePairs (the official code)', () => {
  const o = { maxLength: 10, maxPromptLength: 4, truncationMode: 'keep_end' as const };
  it('appends EOS and masks the prompt', () => {
    const t = tokenizePair([5, 6], [7], [8, 9], 1, o);
    expect(t.chosen).toEqual({ inputIds: [5, 6, 7, 1], labels: [-100, -100, 7, 1] });
    expect(t.rejected).toEqual({ inputIds: [5, 6, 8, 9, 1], labels: [-100, -100, 8, 9, 1] });
  });
  it('truncates the prompt first (keep_end / keep_start), then the responses', () => {
    const prompt = [11, 12, 13, 14, 15, 16];
    // 6 prompt + 3 response tokens fit in 10: nothing is cut.
    expect(tokenizePair(prompt, [7, 7], [8], 1, o).chosen.inputIds).toEqual([...prompt, 7, 7, 1]);
    // 6 + 5 do not: the prompt is cut to 4.
    expect(tokenizePair(prompt, [7, 7, 7, 7], [8], 1, o).chosen.inputIds).toEqual([13, 14, 15, 16, 7, 7, 7, 7, 1]);
    expect(tokenizePair(prompt, [7, 7, 7, 7], [8], 1, { ...o, truncationMode: 'keep_start' }).chosen.inputIds).toEqual([11, 12, 13, 14, 7, 7, 7, 7, 1]);
    const long = tokenizePair(prompt, [7, 7, 7, 7, 7, 7, 7, 7], [8], 1, o);
    expect(long.chosen.inputIds).toEqual([13, 14, 15, 16, 7, 7, 7, 7, 7, 7]);
    expect(long.rejected.inputIds).toEqual([13, 14, 15, 16, 8, 1]);
  });
  it('puts chosen rows above rejected rows, right-padded', () => {
    const b = collatePairs([tokenizePair([5], [7], [8, 9], 1, o), tokenizePair([6], [7, 7, 7], [8], 1, o)], 0);
    expect(b.shape).toEqual([4, 5]);
    expect(Array.from(b.inputIds)).toEqual([5, 7, 1, 0, 0, 6, 7, 7, 7, 1, 5, 8, 9, 1, 0, 6, 8, 1, 0, 0]);
    expect(Array.from(b.labels.subarray(0, 5))).toEqual([-100, 7, 1, -100, -100]);
    expect(Array.from(b.attentionMask!.subarray(15, 20))).toEqual([1, 1, 1, 0, 0]);
  });
});

describe('one optimizer step against an independent implementation (PyTorch float64)', () => {
  it('tdpo2 + RMSprop: loss, gradient norm and the updated model agree', async () => {
    const { readFileSync } = await import('node:fs');
    const g = JSON.parse(readFileSync(new URL('./golden/train-step-golden.json', import.meta.url), 'utf8'));
    const policy = await Model.load(path.join(__dirname, 'golden', 'models', g.checkpoint));
    const step = await TrainStep.create(policy, { loss: 'tdpo2', beta: g.beta, alpha: g.alpha, optimizer: 'rmsprop' });
    const batch = { inputIds: Int32Array.from(g.inputIds), labels: Int32Array.from(g.labels), attentionMask: Int32Array.from(g.attentionMask), shape: g.shape as [number, number] };
    const stats = await step.accumulate(batch);
    expect(stats.loss).toBeCloseTo(g.loss, 6);
    const norm = await step.apply(g.lr, g.maxGradNorm);
    expect(Math.abs(norm - g.gradNorm) / g.gradNorm).toBeLessThan(1e-4);
    const { logits } = await policy.forward(batch.inputIds, batch.shape, { attentionMask: batch.attentionMask });
    const V = 97;
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < logits.length; i++) {
      if (batch.attentionMask[Math.floor(i / V)] === 0) continue;
      diff = Math.max(diff, Math.abs(logits[i] - g.logitsAfter[i]));
      scale = Math.max(scale, Math.abs(g.logitsAfter[i]));
    }
    expect(diff / scale).toBeLessThan(1e-4);
  });
});

describe("the fused linear's chunk", () => {
  it("defaults to the policy's device's: 128 MB on the CPU (1024 on CUDA); a given one is kept", async () => {
    expect([chunkMbOn('cpu'), chunkMbOn('cuda'), chunkMbOn('cuda:1')]).toEqual([128, 1024, 1024]);
    const spy = vi.spyOn(native, 'createTrainer');
    const m = await Model.create(config, { seed: 1 });
    try {
      for (const chunkMb of [undefined, null, 7]) await TrainStep.create(m, { chunkMb });
      expect(spy.mock.calls.map((c) => c[2].chunkMb)).toEqual([128, 128, 7]);
    } finally {
      spy.mockRestore();
      m.dispose();
    }
  });
});
