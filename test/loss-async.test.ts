// tdpoLoss runs off the JS thread: same results as the sync call, and the event loop keeps going.
import { describe, expect, it } from 'vitest';
import { tdpoLoss, tdpoLossSync } from '../lib/index.js';
import { PAIR_FIELDS, randomInputs } from './helpers.js';

describe('async loss', () => {
  for (const implementation of ['fused', 'reference'] as const) {
    it(`${implementation}: equals the sync call bit for bit`, async () => {
      const inputs = randomInputs({ B: 4, T: 8, V: 301, prompt: 2, seed: 17 });
      const options = { implementation, variant: 'tdpo1' as const, grad: true, entropy: true };
      const [a, b] = await Promise.all([tdpoLoss(inputs, options), tdpoLoss(inputs, options)]);
      const s = tdpoLossSync(inputs, options);
      for (const out of [a, b]) {
        expect(out.loss).toBe(s.loss);
        for (const f of PAIR_FIELDS) expect(out[f], f).toEqual(s[f]);
        expect(out.chosenEntropy).toHaveLength(2);
        expect(out.grad).toEqual(s.grad);
      }
    });
  }

  it('keeps the event loop responsive during a large computation', async () => {
    // 26 MB of logits through the reference path: hundreds of ms, so a blocked loop would miss ticks.
    const inputs = randomInputs({ B: 4, T: 32, V: 50257, prompt: 8, seed: 3 });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 2);
    const t0 = performance.now();
    const pending = tdpoLoss(inputs, { implementation: 'reference', grad: true });
    const ticksRightAfterCall = ticks;
    const out = await pending;
    const elapsed = performance.now() - t0;
    clearInterval(timer);
    expect(Number.isFinite(out.loss)).toBe(true);
    expect(ticksRightAfterCall).toBe(0);
    // A 2 ms interval over `elapsed` ms: expect at least a quarter of the ideal count.
    expect(elapsed).toBeGreaterThan(50);
    expect(ticks).toBeGreaterThan(elapsed / 2 / 4);

    // The sync call, by contrast, blocks the loop: no tick fires while it runs.
    let syncTicks = 0;
    const t2 = setInterval(() => syncTicks++, 2);
    tdpoLossSync(inputs, { implementation: 'reference', grad: true });
    const during = syncTicks;
    clearInterval(t2);
    expect(during).toBe(0);
  });
});
