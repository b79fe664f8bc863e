// bfloat16 training with float32 master weights: the optimizer works on float32 copies, the
// policy gets the rounded result, and the masters are part of the optimizer state on disk.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { collatePairs, Model, tokenizePair, TrainStep, type ModelDtype, type TrainStepOptions } from '../lib/index.js';
import { readWeights, rng } from './helpers.js';

const V = 48;
const config = { model_type: 'gpt2', vocab_size: V, n_positions: 32, n_embd: 64, n_layer: 2, n_head: 4 };
const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-mixed-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function batch(seed: number) {
  const r = rng(seed);
  const toks = (n: number) => Array.from({ length: n }, () => 2 + Math.floor(r() * (V - 2)));
  const o = { maxLength: 32, maxPromptLength: 16, truncationMode: 'keep_start' as const };
  return collatePairs(Array.from({ length: 4 }, () => tokenizePair(toks(4), toks(3 + Math.floor(r() * 4)), toks(3 + Math.floor(r() * 4)), 1, o)));
}

/** The policy's weights after `steps` steps from the float32 weights saved in `start`, loaded as `dtype`. */
async function train(start: string, dtype: ModelDtype, steps: number, options: TrainStepOptions, lr: number, out: string) {
  const policy = await Model.load(start, { dtype });
  const step = await TrainStep.create(policy, options);
  for (let i = 0; i < steps; i++) {
    await step.accumulate(batch(100 + i));
    await step.apply(lr, 0);
  }
  await policy.save(out);
  policy.dispose();
  return readWeights(path.join(out, 'model.safetensors'));
}

describe('bfloat16 with float32 master weights', () => {
  it('follows the float32 run where every update is below bf16 resolution', async () => {
    const start = path.join(dir, 'start');
    const m = await Model.create(config, { seed: 3 });
    await m.save(start);
    m.dispose();
    const w0 = readWeights(path.join(start, 'model.safetensors'));
    // SGD at this lr moves a matrix weight by ~1e-5 a step (rms), a tenth of bf16's spacing at
    // GPT-2's init scale (0.02: 1.2e-4), and by ~1e-4 over the 12 steps. Rounded each step, bf16
    // weights would lose most of it; the masters keep it. (RMSprop is no test of this: it turns
    // bf16's noisy small gradients into full-sized steps of either sign.)
    const opts: TrainStepOptions = { loss: 'tdpo2', optimizer: 'sgd' };
    const w32 = await train(start, 'float32', 12, opts, 1e-2, path.join(dir, 'f32'));
    const w16 = await train(start, 'bfloat16', 12, opts, 1e-2, path.join(dir, 'bf16'));
    let dot = 0;
    let n32 = 0;
    let n16 = 0;
    for (const [name, a] of w32) {
      if (!/\.(c_attn|c_fc|c_proj)\.weight$/.test(name)) continue; // matrices at the init scale
      const b = w16.get(name)!;
      const init = w0.get(name)!;
      for (let i = 0; i < a.length; i++) {
        const d32 = a[i] - init[i];
        // bf16's start is the rounded float32 start: its move is measured from there.
        const d16 = b[i] - Math.fround(bf16(init[i]));
        dot += d32 * d16;
        n32 += d32 * d32;
        n16 += d16 * d16;
      }
    }
    const cosine = dot / Math.sqrt(n32 * n16);
    const ratio = Math.sqrt(n16 / n32);
    expect(cosine).toBeGreaterThan(0.95);
    expect(ratio).toBeGreaterThan(0.9);
    expect(ratio).toBeLessThan(1.1);
  });

  it('resumes bit-identically: the masters are saved with the optimizer state', async () => {
    const start = path.join(dir, 'start2');
    const m = await Model.create(config, { seed: 4 });
    await m.save(start);
    m.dispose();
    const opts: TrainStepOptions = { loss: 'tdpo1', optimizer: 'adamw' };
    const straight = await train(start, 'bfloat16', 6, opts, 3e-5, path.join(dir, 'straight'));

    const half = path.join(dir, 'half');
    let policy = await Model.load(start, { dtype: 'bfloat16' });
    let step = await TrainStep.create(policy, opts);
    for (let i = 0; i < 3; i++) {
      await step.accumulate(batch(100 + i));
      await step.apply(3e-5, 0);
    }
    await policy.save(half);
    await step.saveOptimizer(path.join(half, 'optimizer.pt'));
    policy.dispose();
    // The reference stays the starting model (by default it would be a copy of the loaded policy).
    const reference = await Model.load(start, { dtype: 'bfloat16' });
    policy = await Model.load(half, { dtype: 'bfloat16' });
    step = await TrainStep.create(policy, { ...opts, reference });
    await step.loadOptimizer(path.join(half, 'optimizer.pt'));
    for (let i = 3; i < 6; i++) {
      await step.accumulate(batch(100 + i));
      await step.apply(3e-5, 0);
    }
    await policy.save(path.join(dir, 'resumed'));
    policy.dispose();
    reference.dispose();
    const resumed = readWeights(path.join(dir, 'resumed', 'model.safetensors'));
    let moved = 0;
    for (const [name, a] of straight) {
      expect(Buffer.from(resumed.get(name)!.buffer).equals(Buffer.from(a.buffer)), name).toBe(true);
      const s = readWeights(path.join(start, 'model.safetensors')).get(name)!;
      moved += a.some((x, i) => x !== Math.fround(bf16(s[i]))) ? 1 : 0;
    }
    expect(moved).toBeGreaterThan(0);
  });
});

/** Round a float32 to bfloat16 (nearest, ties to even), as libtorch's conversion does. */
function bf16(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  const rounded = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  return new Float32Array(new Uint32Array([rounded << 16]).buffer)[0];
}
