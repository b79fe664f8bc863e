// The fused kernel against the libtorch composition, on random cases that exercise its edges.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildInfo, tdpoLossSync, type TdpoVariant } from '../lib/index.js';
import { PAIR_FIELDS, randomInputs, relError, type CaseSpec } from './helpers.js';

const variants: TdpoVariant[] = ['tdpo2', 'tdpo1', 'dpo'];
const cases: Array<[string, CaseSpec]> = [
  ['plain', { B: 4, T: 7, V: 97, seed: 1 }],
  ['masked prompt positions', { B: 6, T: 9, V: 64, prompt: 4, seed: 2 }],
  ['a fully masked row', { B: 4, T: 6, V: 50, maskedRows: [1], seed: 3 }],
  ['large logits (scale 1e4)', { B: 2, T: 5, V: 300, scale: 1e4, seed: 4 }],
  ['-inf entries (banned tokens)', { B: 4, T: 6, V: 80, negInf: 40, seed: 5 }],
  ['GPT-2 vocabulary', { B: 2, T: 3, V: 50257, seed: 6 }],
];

describe('fused equals reference', () => {
  for (const variant of variants) {
    for (const [name, spec] of cases) {
      it(`${variant}: ${name}`, () => {
        const inputs = randomInputs(spec);
        const options = { variant, beta: 0.1, alpha: 0.5, grad: true, entropy: true };
        const fused = tdpoLossSync(inputs, { ...options, implementation: 'fused' });
        const ref = tdpoLossSync(inputs, { ...options, implementation: 'reference' });
        expect(Number.isFinite(fused.loss)).toBe(true);
        expect(Math.abs(fused.loss - ref.loss) / Math.max(Math.abs(ref.loss), 1e-6)).toBeLessThan(1e-4);
        for (const field of PAIR_FIELDS) {
          expect(fused[field]).toHaveLength(spec.B / 2);
          expect(relError(fused[field], ref[field], 1e-3), field).toBeLessThan(1e-4);
        }
        expect(fused.grad).toBeInstanceOf(Float32Array);
        expect(fused.grad).toHaveLength(spec.B * spec.T * spec.V);
        expect(fused.grad!.every(Number.isFinite)).toBe(true);
        expect(relError(fused.grad!, ref.grad!)).toBeLessThan(1e-4);
      });
    }
  }

  it('gives a zero gradient to unscored positions and rows', () => {
    const inputs = randomInputs({ B: 4, T: 5, V: 33, prompt: 2, maskedRows: [3], seed: 9 });
    const { grad } = tdpoLossSync(inputs, { grad: true });
    for (let row = 0; row < 20; row++) {
      if (inputs.labels[row] !== -100) continue;
      expect(grad!.subarray(row * 33, (row + 1) * 33).every((g) => g === 0)).toBe(true);
    }
  });

  it('omits the gradient unless asked', () => {
    const out = tdpoLossSync(randomInputs({ B: 2, T: 2, V: 8 }));
    expect(out.grad).toBeUndefined();
  });

  it('gives the policy entropy when asked, by either implementation, and omits it otherwise', () => {
    // Σ over a row's scored positions of -Σ_v p log p, p = softmax(policy), in double in JS.
    const byHand = (z: Float32Array, labels: Int32Array, T: number, V: number, row: number) => {
      let s = 0;
      for (let t = 0; t < T; t++) {
        if (labels[row * T + t] === -100) continue;
        const x = Array.from(z.subarray((row * T + t) * V, (row * T + t + 1) * V));
        const max = Math.max(...x);
        const lse = max + Math.log(x.reduce((a, v) => a + Math.exp(v - max), 0));
        s -= x.reduce((a, v) => (v === -Infinity ? a : a + Math.exp(v - lse) * (v - lse)), 0);
      }
      return s;
    };
    const plainInputs = randomInputs({ B: 4, T: 3, V: 5, prompt: 1, seed: 11 });
    // Rows that stress the online sums: -inf but one entry (entropy 0), half -inf first (the running
    // max starts at -inf), a 1e4 offset with a spread of a few units, a rising row (a new max every
    // block), and sparse -inf entries; V = 300 spans several blocks of every kernel width.
    const V = 300, T = 5, B = 2;
    const z = new Float32Array(B * T * V), r = new Float32Array(B * T * V), labels = new Int32Array(B * T).fill(7);
    let a = 5;
    const rand = () => ((a = (a * 1103515245 + 12345) % 2147483648) / 2147483648);
    for (let row = 0; row < B * T; row++) {
      for (let v = 0; v < V; v++) {
        const i = row * V + v;
        z[i] = [v === 7 ? 1 : -Infinity, v < 150 ? -Infinity : rand() * 4, 1e4 + rand() * 6, v / 20, rand() < 0.2 && v !== 7 ? -Infinity : rand() * 3][row % 5];
        if (row % 5 === 1 && v === 7) z[i] = 2;
        r[i] = Number.isFinite(z[i]) ? z[i] + rand() - 0.5 : -Infinity; // banned in both models
      }
    }
    for (const inputs of [plainInputs, { policyLogits: z, referenceLogits: r, labels, shape: [B, T, V] as [number, number, number] }]) {
      const [b, t, v] = inputs.shape;
      for (const implementation of ['fused', 'reference'] as const) {
        const plain = tdpoLossSync(inputs, { implementation });
        expect(plain.chosenEntropy).toBeUndefined();
        expect(plain.rejectedEntropy).toBeUndefined();
        const out = tdpoLossSync(inputs, { implementation, entropy: true });
        expect(out.loss).toBe(plain.loss);
        const got = [...out.chosenEntropy!, ...out.rejectedEntropy!];
        const want = Array.from({ length: b }, (_, row) => byHand(inputs.policyLogits, inputs.labels, t, v, row));
        // float32 logits: an absolute 1e-4 per position (near-one-hot rows hold p = 1 - ε in float).
        got.forEach((x, i) => expect(Math.abs(x - want[i]), `${implementation} row ${i}: ${x} vs ${want[i]}`).toBeLessThan(1e-4 * t + 1e-5 * Math.abs(want[i])));
      }
    }
    expect(() => tdpoLossSync(plainInputs, { entropy: 'yes' as unknown as boolean })).toThrow(expect.objectContaining({ code: 'ERR_TDPO_OPTION', message: "options.entropy must be a boolean, got 'yes'" }));
  });

  it('matches the definitions on a hand-checkable case', () => {
    // B = 2, T = 1, V = 2; policy = reference, so every log-ratio and KL is 0 and the loss is log 2.
    const logits = new Float32Array([0.3, -1.2, 2.0, 0.5]);
    const out = tdpoLossSync(
      { policyLogits: logits, referenceLogits: logits.slice(), labels: new Int32Array([0, 1]), shape: [2, 1, 2] },
      { grad: true },
    );
    expect(out.loss).toBeCloseTo(Math.log(2), 7);
    expect(out.chosenKl[0]).toBeCloseTo(0, 7);
    // d loss / d z at the chosen row: -(beta/2) (1[v=y] - p_v) / P with P = 1, sigma(0) = 1/2.
    const p0 = 1 / (1 + Math.exp(-1.2 - 0.3));
    expect(out.grad![0]).toBeCloseTo(-0.05 * (1 - p0), 6);
    expect(out.grad![1]).toBeCloseTo(-0.05 * (0 - (1 - p0)), 6);
  });
});

// The float kernel is built once per instruction set with that set's vector width (src/loss/simd.h)
// and picked at load; TDPO_KERNEL_ISA asks for a narrower one, so every kernel this CPU can run is
// checked against the reference here, each in a child process (the choice is made once).
describe("every instruction set's kernel", () => {
  const distEntry = path.resolve(__dirname, '..', 'dist', 'cjs', 'index.js');
  const script = `
    const t = require(${JSON.stringify(distEntry)});
    let s = 7;
    const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296);
    const worst = {};
    for (const [B, T, V] of [[4, 7, 97], [2, 3, 50257], [4, 5, 3]]) {
      const n = B * T * V, z = new Float32Array(n), r = new Float32Array(n), labels = new Int32Array(B * T);
      for (let i = 0; i < n; i++) { z[i] = (rand() - 0.5) * 12; r[i] = z[i] + (rand() - 0.5) * 3; if (V > 50 && rand() < 0.1) { r[i] = -Infinity; if (rand() < 0.5) z[i] = -Infinity; } }
      for (let i = 0; i < B * T; i++) { labels[i] = i % T === 0 ? -100 : Math.floor(rand() * V); if (labels[i] >= 0) r[i * V + labels[i]] = z[i * V + labels[i]] = 0; }
      for (const variant of ['tdpo2', 'tdpo1', 'dpo']) {
        const o = { variant, beta: 0.1, alpha: 0.5, grad: true, entropy: true };
        const f = t.tdpoLossSync({ policyLogits: z, referenceLogits: r, labels, shape: [B, T, V] }, { ...o, implementation: 'fused' });
        const g = t.tdpoLossSync({ policyLogits: z, referenceLogits: r, labels, shape: [B, T, V] }, { ...o, implementation: 'reference' });
        let num = 0, den = 0;
        for (let i = 0; i < n; i++) { num += (f.grad[i] - g.grad[i]) ** 2; den += g.grad[i] ** 2; }
        const stats = (x) => [...x.chosenKl, ...x.rejectedKl, ...x.chosenEntropy, ...x.rejectedEntropy];
        const kl = Math.max(...stats(f).map((x, i) => Math.abs(x - stats(g)[i]) / Math.max(1e-3, Math.abs(x))));
        const e = Math.max(Math.abs(f.loss - g.loss) / Math.max(1e-6, Math.abs(g.loss)), Math.sqrt(num / Math.max(den, 1e-30)), kl);
        worst[variant] = Math.max(worst[variant] ?? 0, e);
      }
    }
    console.log(JSON.stringify({ isa: t.buildInfo().kernelIsa, worst }));`;
  const isas = ['avx512', 'avx2', 'sse2'];
  const own = buildInfo().kernelIsa;

  it('names the kernel it runs', () => {
    expect([...isas, 'generic']).toContain(own);
  });

  for (const isa of isas) {
    // With TDPO_KERNEL_ISA set for the whole run, this process's own kernel is not the CPU's widest.
    it.skipIf(!!process.env.TDPO_KERNEL_ISA)(`${isa} equals the reference (or is not offered by this CPU)`, () => {
      const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, TDPO_KERNEL_ISA: isa }, encoding: 'utf8', timeout: 60_000 });
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { isa: string; worst: Record<string, number> };
      if (own === 'generic') return expect(out.isa).toBe('generic');
      // A request wider than this CPU is ignored: the child then runs the widest it has.
      if (isas.indexOf(isa) < isas.indexOf(own)) return expect(out.isa).toBe(own);
      expect(out.isa).toBe(isa);
      for (const [variant, e] of Object.entries(out.worst)) expect(e, variant).toBeLessThan(1e-4);
    });
  }
});
