// Seeded fuzzing (fast-check) of the two places where arbitrary bytes from a caller meet native
// code: the loss inputs and safetensors headers. The properties: a coded error or a sound result,
// never a crash, a hang or a NaN; and the fused kernel agrees with the reference composition or
// both refuse. A failure prints its seed and shrunk counterexample; rerun with that seed.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { Model, tdpoLossSync, type TdpoLossOptions, type TdpoLossResult } from '../lib/index.js';
import { readSafetensorsHeader } from '../lib/io/safetensors.js';
import { dirOf } from './model-fixtures.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'tdpo-fuzz-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
// TDPO_FUZZ_SEED / TDPO_FUZZ_RUNS widen a local search; CI runs the fixed seed.
const SEED = Number(process.env.TDPO_FUZZ_SEED ?? 20261202);
const RUNS = Number(process.env.TDPO_FUZZ_RUNS ?? 1);

type Outcome = { error: string } | { result: TdpoLossResult };
function outcome(f: () => TdpoLossResult): Outcome {
  try {
    return { result: f() };
  } catch (err) {
    const e = err as Error & { code?: string };
    // Only coded TypeErrors / RangeErrors are allowed out.
    expect(e).toBeInstanceOf(Error);
    expect(e.code, e.message).toMatch(/^ERR_TDPO_(TYPE|SHAPE|LABEL|LOGITS|OPTION)$/);
    return { error: e.code! };
  }
}

/** The largest spread (max - min over finite values) of any row of a [rows, V] array. */
function spread(logits: Float32Array, V: number): number {
  let worst = 0;
  for (let i = 0; i < logits.length; i += V) {
    let lo = Infinity, hi = -Infinity;
    for (let v = i; v < i + V; v++) {
      if (Number.isFinite(logits[v])) {
        lo = Math.min(lo, logits[v]);
        hi = Math.max(hi, logits[v]);
      }
    }
    if (hi >= lo) worst = Math.max(worst, hi - lo);
  }
  return worst;
}

const perPair = ['losses', 'chosenRewards', 'rejectedRewards', 'chosenLogratio', 'rejectedLogratio', 'chosenKl', 'rejectedKl', 'chosenLogps', 'rejectedLogps', 'chosenEntropy', 'rejectedEntropy'] as const;

describe('fuzz: loss inputs', () => {
  const logit = fc.oneof(
    { weight: 8, arbitrary: fc.float({ min: -30, max: 30, noNaN: true }) },
    { weight: 2, arbitrary: fc.float({ min: Math.fround(-3e38), max: Math.fround(3e38), noNaN: true, noDefaultInfinity: true }) },
    { weight: 1, arbitrary: fc.constantFrom(-Infinity, Infinity, NaN, 0, -0, 1e30, -1e30, 1e-40) },
  );
  const input = fc
    .record({ pairs: fc.integer({ min: 1, max: 2 }), T: fc.integer({ min: 1, max: 4 }), V: fc.integer({ min: 1, max: 40 }) })
    .chain(({ pairs, T, V }) => {
      const B = 2 * pairs;
      const n = B * T * V;
      // Offsets per model: softmax is shift-invariant, so they stress the kernel's arithmetic.
      const offset = fc.constantFrom(0, 0, 1e6, -1e9, 1e20);
      return fc.record({
        shape: fc.constant([B, T, V] as [number, number, number]),
        policy: fc.array(logit, { minLength: n, maxLength: n }),
        reference: fc.array(logit, { minLength: n, maxLength: n }),
        dz: offset,
        dr: offset,
        labels: fc.array(fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: V - 1 }) }, { weight: 3, arbitrary: fc.constant(-100) }, { weight: 1, arbitrary: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) }), { minLength: B * T, maxLength: B * T }),
        variant: fc.constantFrom('tdpo1', 'tdpo2', 'dpo', 'tdpo3'),
        beta: fc.oneof(fc.constant(0.1), fc.double({ min: -1, max: 100 }), fc.constantFrom(0, NaN, Infinity)),
        alpha: fc.oneof(fc.constant(0.5), fc.double({ min: -2, max: 2 }), fc.constant(NaN)),
      });
    });

  it('fused and reference: both refuse with the same code, or agree with no NaN anywhere', () => {
    fc.assert(
      fc.property(input, (c) => {
        const inputs = {
          policyLogits: Float32Array.from(c.policy, (x) => x + c.dz),
          referenceLogits: Float32Array.from(c.reference, (x) => x + c.dr),
          labels: Int32Array.from(c.labels),
          shape: c.shape,
        };
        const options = { variant: c.variant, beta: c.beta, alpha: c.alpha, grad: true, entropy: true } as TdpoLossOptions;
        const fused = outcome(() => tdpoLossSync(inputs, options));
        const reference = outcome(() => tdpoLossSync(inputs, { ...options, implementation: 'reference' }));
        if ('error' in fused || 'error' in reference) {
          expect(fused).toEqual(reference);
          return;
        }
        const f = fused.result, r = reference.result;
        for (const res of [f, r]) {
          expect(Number.isNaN(res.loss)).toBe(false);
          for (const k of perPair) expect(res[k].some(Number.isNaN), k).toBe(false);
          expect(res.grad!.some(Number.isNaN)).toBe(false);
        }
        // float32 resolves a log-probability to about eps x (the row's spread of finite logits):
        // with logits 1e30 apart in one row, the reference's float32 log-softmax loses a 1e20
        // log-ratio that the fused kernel (double sums) keeps. Offsets do not widen the spread.
        const tol = 1e-6 * c.shape[1] * Math.max(spread(inputs.policyLogits, c.shape[2]), spread(inputs.referenceLogits, c.shape[2]));
        const close = (a: number, b: number, scale = 1) => a === b || Math.abs(a - b) <= 1e-3 * Math.max(1, Math.abs(a), Math.abs(b)) + scale * tol;
        expect(close(f.loss, r.loss, 4 * Math.abs(c.beta)), `loss ${f.loss} vs ${r.loss}`).toBe(true);
        for (const k of ['chosenKl', 'rejectedKl', 'chosenLogratio', 'rejectedLogratio'] as const) {
          f[k].forEach((x, i) => expect(close(x, r[k][i]), `${k}[${i}] ${x} vs ${r[k][i]}`).toBe(true));
        }
      }),
      { seed: SEED, numRuns: 1000 * RUNS },
    );
  });
});

describe('fuzz: safetensors headers', () => {
  const source = readFileSync(path.join(dirOf('gpt2-tiny'), 'model.safetensors'));
  const headerLen = Number(source.readBigUInt64LE(0));
  const header = JSON.parse(source.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, Record<string, unknown>>;
  const data = source.subarray(8 + headerLen);
  const names = Object.keys(header).filter((k) => k !== '__metadata__');

  // Edits of a real header: one field of one tensor replaced by any JSON value or a near miss,
  // tensors dropped or added, the length prefix or the file cut.
  const near = fc.oneof(
    fc.jsonValue(),
    fc.constantFrom('F32', 'F16', 'BF16', 'F64', 'I64', 'toString', '__proto__', ''),
    fc.array(fc.oneof(fc.integer({ min: -5, max: 1 << 20 }), fc.constantFrom(2 ** 53, 2 ** 62, -0, 1.5, 1e308)), { maxLength: 5 }),
  );
  const edit = fc.oneof(
    fc.record({ kind: fc.constant('field' as const), tensor: fc.constantFrom(...names), field: fc.constantFrom('dtype', 'shape', 'data_offsets'), value: near }),
    fc.record({ kind: fc.constant('drop' as const), tensor: fc.constantFrom(...names) }),
    fc.record({ kind: fc.constant('add' as const), name: fc.oneof(fc.string(), fc.constantFrom('h.9.mlp.c_fc.weight', '__proto__', 'constructor')), value: fc.jsonValue() }),
    fc.record({ kind: fc.constant('length' as const), value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }),
    fc.record({ kind: fc.constant('truncate' as const), keep: fc.double({ min: 0, max: 1, noNaN: true }) }),
    fc.record({ kind: fc.constant('bytes' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  );

  function build(edits: fc.infer<typeof edit>[]): Buffer {
    const h = JSON.parse(JSON.stringify(header)) as Record<string, unknown>;
    let lengthOverride: bigint | null = null;
    for (const e of edits) {
      if (e.kind === 'field') {
        const entry = h[e.tensor];
        if (typeof entry === 'object' && entry !== null) (entry as Record<string, unknown>)[e.field] = e.value;
      }
      else if (e.kind === 'drop') delete h[e.tensor];
      else if (e.kind === 'add') Object.defineProperty(h, e.name, { value: e.value, enumerable: true, configurable: true, writable: true });
      else if (e.kind === 'length') lengthOverride = e.value;
    }
    const json = Buffer.from(JSON.stringify(h));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
    let file = Buffer.concat([len, json, data]);
    for (const e of edits) {
      if (e.kind === 'truncate') file = file.subarray(0, Math.floor(file.length * e.keep));
      else if (e.kind === 'bytes' && file.length > 8) file[8 + (e.at % (file.length - 8))] = e.byte;
    }
    return file;
  }

  it('a load resolves or rejects with a coded checkpoint error; nothing else', async () => {
    const dir = mkdtempSync(path.join(tmp, 'ck-'));
    cpSync(dirOf('gpt2-tiny'), dir, { recursive: true });
    const file = path.join(dir, 'model.safetensors');
    let loaded = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(edit, { minLength: 1, maxLength: 3 }), async (edits) => {
        writeFileSync(file, build(edits));
        try {
          readSafetensorsHeader(file);
        } catch (err) {
          expect((err as { code?: string }).code, (err as Error).message).toBe('ERR_TDPO_CHECKPOINT');
        }
        let m: Model | null = null;
        try {
          m = await Model.load(dir);
        } catch (err) {
          expect((err as { code?: string }).code ?? 'no code', (err as Error).message).toMatch(/^ERR_TDPO_(CHECKPOINT|CONFIG)$/);
        }
        if (m) {
          // Loaded: every weight is finite (NaN and infinities are refused at load), and the model runs.
          loaded++;
          const { logits } = await m.forward(Int32Array.from([1, 2, 3]), [1, 3]);
          expect(logits.length).toBe(3 * Number(m.config.vocab_size));
          m.dispose();
        }
      }),
      { seed: SEED, numRuns: 300 * RUNS },
    );
    // Some edits (a byte inside the data, a harmless metadata key) still load: the test saw both sides.
    expect(loaded).toBeGreaterThan(0);
  });
});
