// Issue 11, the native side: memory that changes under a running call, worker threads terminated
// mid-call, write failures, checkpoints that do not match their config or hold NaN, numerics under
// large logit offsets and -inf at labels, and runtime limits. Each case crashed, hung or gave a
// wrong number before its fix.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, describe, expect, it } from 'vitest';
import { Model, setNumThreads, tdpoLoss, tdpoLossSync, TrainStep, collatePairs, tokenizePair, type TdpoLossInputs } from '../lib/index.js';
import { randomInputs } from './helpers.js';
import { dirOf } from './model-fixtures.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'tdpo-hard-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const root = path.resolve(__dirname, '..');
const distEntry = path.join(root, 'dist', 'cjs', 'index.js');

const B = 4, T = 8, V = 3000;
const base = randomInputs({ B, T, V, seed: 11, prompt: 2 });
const want = tdpoLossSync(base, { grad: true });
const fresh = (): TdpoLossInputs => ({
  policyLogits: base.policyLogits.slice(),
  referenceLogits: base.referenceLogits.slice(),
  labels: base.labels.slice(),
  shape: [B, T, V],
});
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const transferAway = (buffer: ArrayBufferLike) => structuredClone(buffer, { transfer: [buffer as ArrayBuffer] });

describe('typed-array memory that changes under a call', () => {
  it('async: the input buffer transferred away (and collected) while the call runs', async () => {
    const inputs = fresh();
    const pending = tdpoLoss(inputs, { grad: true });
    let moved: ArrayBuffer | null = transferAway(inputs.policyLogits.buffer);
    expect(inputs.policyLogits.length).toBe(0);
    moved = null;
    gc();
    const out = await pending;
    expect(moved).toBeNull();
    expect(out.loss).toBe(want.loss);
    expect(out.grad).toEqual(want.grad);
  });

  it('async: a resizable input buffer shrunk to 0 while the call runs', async () => {
    const buffer = new ArrayBuffer(B * T * V * 4, { maxByteLength: B * T * V * 4 });
    const policy = new Float32Array(buffer);
    policy.set(base.policyLogits);
    const pending = tdpoLoss({ ...fresh(), policyLogits: policy });
    (buffer as ArrayBuffer & { resize(n: number): void }).resize(0);
    expect((await pending).loss).toBe(want.loss);
  });

  it('async: labels overwritten with out-of-range values after they were validated', async () => {
    const inputs = fresh();
    const pending = tdpoLoss(inputs);
    inputs.labels.fill(2 ** 30);
    expect((await pending).loss).toBe(want.loss);
  });

  it('sync: an options getter that detaches an input after it was read gets a coded error', () => {
    const inputs = fresh();
    const options = {
      get variant() {
        transferAway(inputs.policyLogits.buffer);
        return 'tdpo2' as const;
      },
    };
    expect(() => tdpoLossSync(inputs, options)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_SHAPE' }));
  });

  it('sync: a getter on one input that detaches another', () => {
    const inputs = fresh();
    const policy = inputs.policyLogits;
    const sneaky = {
      shape: inputs.shape,
      policyLogits: policy,
      get referenceLogits() {
        transferAway(policy.buffer);
        return inputs.referenceLogits;
      },
      labels: inputs.labels,
    };
    expect(() => tdpoLossSync(sneaky)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_SHAPE' }));
  });

  it('async: SharedArrayBuffer inputs are read in place and give the same numbers', async () => {
    const shared = new Float32Array(new SharedArrayBuffer(B * T * V * 4));
    shared.set(base.policyLogits);
    expect((await tdpoLoss({ ...fresh(), policyLogits: shared }, { grad: true })).grad).toEqual(want.grad);
  });

  it('async: memory tdpo handed out (a gradient) is kept alive when JS transfers it away', async () => {
    const grad = tdpoLossSync(base, { grad: true }).grad!;
    grad.set(base.policyLogits);
    const pending = tdpoLoss({ ...fresh(), policyLogits: grad });
    let moved: ArrayBuffer | null = transferAway(grad.buffer);
    moved = null;
    gc();
    expect(moved).toBeNull();
    expect((await pending).loss).toBe(want.loss);
  });
});

describe('a worker thread terminated while its call is pending', () => {
  // Each case ran in a child process: before the fix the whole process aborted at teardown.
  const script = (body: string) => `
    const { Worker } = require('node:worker_threads');
    const code = ${JSON.stringify(`
      const { parentPort } = require('node:worker_threads');
      const t = require(${JSON.stringify(distEntry)});
      (async () => { ${body} })();`)};
    (async () => {
      for (let i = 0; i < 4; i++) {
        const w = new Worker(code, { eval: true });
        await new Promise((res) => w.on('message', res));
        await new Promise((r) => setTimeout(r, 2 + 15 * i));
        await w.terminate();
      }
      console.log('alive');
    })();`;
  const cases: Record<string, string> = {
    tdpoLoss: `const n = 8 * 64 * 20000;
      const p = t.tdpoLoss({ policyLogits: new Float32Array(n), referenceLogits: new Float32Array(n), labels: new Int32Array(8 * 64).fill(1), shape: [8, 64, 20000] }, { grad: true });
      parentPort.postMessage(0); await p;`,
    'tdpoLoss rejecting': `const n = 8 * 64 * 20000; const z = new Float32Array(n); z[n - 1] = NaN;
      const p = t.tdpoLoss({ policyLogits: z, referenceLogits: new Float32Array(n), labels: new Int32Array(8 * 64).fill(1), shape: [8, 64, 20000] });
      parentPort.postMessage(0); await p.catch(() => {});`,
    generate: `const m = await t.Model.create({ model_type: 'gpt2', vocab_size: 500, n_positions: 300, n_embd: 64, n_layer: 2, n_head: 2 });
      const p = m.generate([new Int32Array([1, 2, 3])], { maxNewTokens: 250 });
      parentPort.postMessage(0); await p;`,
    forward: `const m = await t.Model.create({ model_type: 'gpt2', vocab_size: 5000, n_positions: 256, n_embd: 64, n_layer: 2, n_head: 2 });
      const p = m.forward(new Int32Array(8 * 256).fill(1), [8, 256]);
      parentPort.postMessage(0); await p;`,
  };
  for (const [name, body] of Object.entries(cases)) {
    it(name, () => {
      const r = spawnSync(process.execPath, ['-e', script(body)], { encoding: 'utf8', timeout: 60_000 });
      expect(r.stderr).not.toMatch(/terminate called|Aborted/);
      expect({ status: r.status, signal: r.signal, out: r.stdout.trim() }).toEqual({ status: 0, signal: null, out: 'alive' });
    });
  }
});

describe('the fused kernel under large logit offsets and -inf at labels', () => {
  const small = randomInputs({ B: 4, T: 3, V: 200, seed: 5, prompt: 1 });
  const shifted = (dz: number, dr: number): TdpoLossInputs => ({
    ...small,
    policyLogits: small.policyLogits.map((x) => x + dz),
    referenceLogits: small.referenceLogits.map((x) => x + dr),
  });
  // A softmax is shift-invariant; the inputs are rounded to float32 after the shift, so the
  // reference (log-softmax subtracts each row's max first) is the arbiter, not the unshifted KL.
  for (const [dz, dr] of [[1e6, 0], [0, 1e6], [1e9, 0], [0, -1e9], [1e20, 0], [-1e20, 1e20], [3e38, 0], [0, -3e38], [1e30, 1e30]]) {
    it(`policy + ${dz}, reference + ${dr}: fused = reference`, () => {
      for (const variant of ['tdpo1', 'tdpo2', 'dpo'] as const) {
        const f = tdpoLossSync(shifted(dz, dr), { variant, grad: true });
        const r = tdpoLossSync(shifted(dz, dr), { variant, grad: true, implementation: 'reference' });
        for (const k of ['chosenKl', 'rejectedKl', 'chosenLogratio', 'rejectedLogratio'] as const) {
          for (let i = 0; i < f[k].length; i++) expect(Math.abs(f[k][i] - r[k][i])).toBeLessThan(1e-4 * Math.max(1, Math.abs(r[k][i])));
          expect(f[k].every((x) => Number.isFinite(x))).toBe(true);
        }
        expect(Math.abs(f.loss - r.loss)).toBeLessThan(1e-5);
        let g = 0;
        for (let i = 0; i < f.grad!.length; i++) g = Math.max(g, Math.abs(f.grad![i] - r.grad![i]));
        expect(g).toBeLessThan(1e-5);
      }
    });
  }

  it('-inf at a labelled token is refused alike by every variant and both implementations', () => {
    for (const field of ['policyLogits', 'referenceLogits'] as const) {
      for (const row of [0, 2]) {
        const x = { ...small, [field]: small[field].slice() };
        const t = 1;
        x[field][(row * 3 + t) * 200 + small.labels[row * 3 + t]] = -Infinity;
        for (const variant of ['tdpo1', 'tdpo2', 'dpo'] as const) {
          for (const implementation of ['fused', 'reference'] as const) {
            expect(() => tdpoLossSync(x, { variant, implementation }), `${field} row ${row} ${variant} ${implementation}`).toThrow(
              expect.objectContaining({ code: 'ERR_TDPO_LOGITS', message: expect.stringContaining(`${field}[${row}, ${t}, `) }),
            );
          }
        }
      }
    }
  });
});

describe('checkpoints', () => {
  const copyOf = (name: string) => {
    const d = mkdtempSync(path.join(tmp, 'ck-'));
    cpSync(dirOf(name), d, { recursive: true });
    return d;
  };

  it('a config asking for far more layers than the checkpoint holds is refused before allocating', async () => {
    const d = copyOf('gpt2-tiny');
    const cfg = JSON.parse(readFileSync(path.join(d, 'config.json'), 'utf8'));
    cfg.n_layer = 60_000; // under the 65,536 any config may ask for
    cfg.n_embd = 4096;
    cfg.n_head = 32;
    writeFileSync(path.join(d, 'config.json'), JSON.stringify(cfg));
    const t0 = Date.now();
    await expect(Model.load(d)).rejects.toMatchObject({ code: 'ERR_TDPO_CHECKPOINT' });
    expect(Date.now() - t0).toBeLessThan(5000);
    const original = JSON.parse(readFileSync(path.join(dirOf('gpt2-tiny'), 'config.json'), 'utf8'));
    const n = original.n_layer;
    Object.assign(cfg, { n_embd: original.n_embd, n_head: original.n_head });
    writeFileSync(path.join(d, 'config.json'), JSON.stringify(cfg));
    await expect(Model.load(d)).rejects.toMatchObject({ code: 'ERR_TDPO_CHECKPOINT', message: expect.stringContaining(`'transformer.h.${n}.`) });
  });

  // A copy of gpt2-tiny's weights file and where one tensor's float32 values lie in it.
  const tensorIn = (suffix: string) => {
    const d = copyOf('gpt2-tiny');
    const file = path.join(d, 'model.safetensors');
    const bytes = readFileSync(file);
    const headerLen = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString('utf8'));
    const name = Object.keys(header).find((k) => k.endsWith(suffix))!;
    const [from, to] = (header[name].data_offsets as [number, number]).map((o) => 8 + headerLen + o);
    return { d, file, bytes, name, from, to };
  };

  it('NaN or infinite weights are refused at load, naming the tensor', async () => {
    for (const bad of [NaN, Infinity]) {
      const { d, file, bytes, name, from } = tensorIn('ln_f.weight');
      bytes.writeFloatLE(bad, from + 4 * 3);
      writeFileSync(file, bytes);
      await expect(Model.load(d)).rejects.toMatchObject({
        code: 'ERR_TDPO_CHECKPOINT',
        message: expect.stringContaining(`'${name}'`),
      });
    }
  });

  it('greedy generation refuses NaN logits instead of returning token 0 as a choice', async () => {
    const { d, file, bytes, from, to } = tensorIn('wte.weight');
    // Finite weights (the load accepts them) whose sums overflow: the logits come out NaN.
    for (let at = from; at < to; at += 4) bytes.writeFloatLE(3e38, at);
    writeFileSync(file, bytes);
    const m = await Model.load(d);
    const { logits } = await m.forward(new Int32Array([1, 2, 3]), [1, 3]);
    expect(logits.some((x) => !Number.isFinite(x))).toBe(true);
    for (const temperature of [0, 1]) {
      await expect(m.generate([new Int32Array([1, 2, 3])], { maxNewTokens: 2, temperature })).rejects.toMatchObject({ code: 'ERR_TDPO_LOGITS' });
    }
    m.dispose();
  });

  it('weights beyond the machine memory are refused before they are allocated (not OOM-killed)', async () => {
    const llama70bLayers = { model_type: 'llama', vocab_size: 128, hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 1000, num_attention_heads: 64, num_key_value_heads: 8, max_position_embeddings: 64 };
    const t0 = Date.now();
    await expect(Model.create(llama70bLayers)).rejects.toMatchObject({ code: 'ERR_TDPO_OUT_OF_MEMORY', message: expect.stringMatching(/weights need 3\d{3}(\.\d+)? GB/) });
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('a missing shard and a directory in place of model.safetensors are coded errors', async () => {
    const sharded = copyOf('neox-sequential-sharded');
    rmSync(path.join(sharded, 'model-00002-of-00002.safetensors'));
    await expect(Model.load(sharded)).rejects.toMatchObject({ code: 'ERR_TDPO_CHECKPOINT', message: expect.stringContaining('model-00002-of-00002.safetensors') });
    const dir = copyOf('gpt2-tiny');
    rmSync(path.join(dir, 'model.safetensors'));
    mkdirSync(path.join(dir, 'model.safetensors'));
    await expect(Model.load(dir)).rejects.toMatchObject({ code: 'ERR_TDPO_CHECKPOINT' });
  });

  it('concurrent saves of two models to one folder leave one whole model, never a mix', async () => {
    const cfg = { model_type: 'gpt2', vocab_size: 64, n_positions: 16, n_embd: 32, n_layer: 2, n_head: 2 };
    const a = await Model.create(cfg, { seed: 1 });
    const b = await Model.create(cfg, { seed: 2 });
    const ids = Int32Array.from({ length: 8 }, (_, i) => i + 1);
    const la = (await a.forward(ids, [1, 8])).logits;
    const lb = (await b.forward(ids, [1, 8])).logits;
    const out = path.join(tmp, 'concurrent');
    for (let round = 0; round < 3; round++) {
      await Promise.all([a.save(out), b.save(out), a.save(out), b.save(out)]);
      const loaded = await Model.load(out);
      const l = (await loaded.forward(ids, [1, 8])).logits;
      expect(l).toEqual(lb); // the last call wins, whole
      loaded.dispose();
    }
    const names = (await import('node:fs')).readdirSync(out).sort();
    expect(names).toEqual(['config.json', 'model.safetensors']);
    expect(la).not.toEqual(lb);
    a.dispose();
    b.dispose();
  });
});

describe('write failures', () => {
  // RLIMIT_FSIZE makes writes past 64 KiB fail with EFBIG (Node ignores SIGXFSZ), as a full disk
  // fails them with ENOSPC: before the fix, libtorch's archive writer threw from a destructor and
  // the process aborted.
  it('optimizer.pt and model.safetensors: ERR_TDPO_IO, the previous files intact, the process alive', () => {
    const dir = path.join(tmp, 'limited');
    mkdirSync(dir, { recursive: true });
    const child = `
      const t = require(${JSON.stringify(distEntry)});
      const fs = require('node:fs');
      (async () => {
        const m = await t.Model.create({ model_type: 'gpt2', vocab_size: 256, n_positions: 32, n_embd: 64, n_layer: 2, n_head: 2 }, { seed: 3 });
        const step = await t.TrainStep.create(m, { loss: 'dpo' });
        // One update, so that the optimizer has state to write (RMSprop's is made lazily).
        await step.accumulate(t.collatePairs([t.tokenizePair([2, 3], [4, 6], [5, 7], 1, { maxLength: 16, maxPromptLength: 8, truncationMode: 'keep_start' })]));
        await step.apply(1e-3, 10);
        const out = {};
        for (const [name, f] of [['optimizer', () => step.saveOptimizer(${JSON.stringify(path.join(dir, 'optimizer.pt'))})],
                                 ['model', () => m.save(${JSON.stringify(dir)})]]) {
          try { await f(); out[name] = 'saved'; } catch (e) { out[name] = e.code + ': ' + e.message; }
        }
        out.files = fs.readdirSync(${JSON.stringify(dir)}).sort();
        console.log(JSON.stringify(out));
      })();`;
    // First without a limit: the previous checkpoint.
    const first = spawnSync(process.execPath, ['-e', child], { encoding: 'utf8' });
    expect(JSON.parse(first.stdout)).toMatchObject({ optimizer: 'saved', model: 'saved' });
    const before = { opt: readFileSync(path.join(dir, 'optimizer.pt')), model: readFileSync(path.join(dir, 'model.safetensors')) };
    const r = spawnSync('bash', ['-c', 'ulimit -f 64; exec "$0" -e "$1"', process.execPath, child.replace('seed: 3', 'seed: 4')], { encoding: 'utf8' });
    expect(r.stderr).not.toMatch(/terminate called/);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.optimizer).toMatch(/^ERR_TDPO_IO: .*optimizer\.pt/);
    expect(out.model).toMatch(/^ERR_TDPO_IO: .*model\.safetensors/);
    expect(out.files).toEqual(['config.json', 'model.safetensors', 'optimizer.pt']); // no temporary files left
    expect(readFileSync(path.join(dir, 'optimizer.pt')).equals(before.opt)).toBe(true);
    expect(readFileSync(path.join(dir, 'model.safetensors')).equals(before.model)).toBe(true);
  });
});

describe('the train step', () => {
  const cfg = { model_type: 'gpt2', vocab_size: 32, n_positions: 16, n_embd: 32, n_layer: 2, n_head: 2 };
  const batch = () => collatePairs([tokenizePair([2, 3], [4, 6], [5, 7], 1, { maxLength: 16, maxPromptLength: 8, truncationMode: 'keep_start' })]);
  it('a batch getter that detaches inputIds after they were read gets a coded error', async () => {
    const m = await Model.create(cfg, { seed: 1 });
    const step = await TrainStep.create(m, { loss: 'dpo' });
    const b = batch();
    const sneaky = {
      shape: b.shape,
      inputIds: b.inputIds,
      get labels() {
        transferAway(b.inputIds.buffer);
        return b.labels;
      },
      attentionMask: b.attentionMask,
    };
    await expect(step.accumulate(sneaky)).rejects.toMatchObject({ code: 'ERR_TDPO_SHAPE' });
    m.dispose();
  });

  it('is refused with ERR_TDPO_CHECKPOINT, not a libtorch internal assert', async () => {
    const m = await Model.create(cfg, { seed: 1 });
    const adam = await TrainStep.create(m, { optimizer: 'adamw' });
    await adam.accumulate(batch());
    await adam.apply(1e-3, 10);
    const file = path.join(tmp, 'adamw.pt');
    await adam.saveOptimizer(file);
    const rms = await TrainStep.create(m, { optimizer: 'rmsprop' });
    await expect(rms.loadOptimizer(file)).rejects.toMatchObject({ code: 'ERR_TDPO_CHECKPOINT', message: expect.stringContaining("'adamw'") });
    const other = await Model.create({ ...cfg, n_layer: 3 }, { seed: 1 });
    const adamOther = await TrainStep.create(other, { optimizer: 'adamw' });
    await expect(adamOther.loadOptimizer(file)).rejects.toMatchObject({ code: 'ERR_TDPO_CHECKPOINT' });
    await expect(adamOther.loadOptimizer(path.join(tmp, 'missing.pt'))).rejects.toMatchObject({ code: 'ERR_TDPO_CHECKPOINT' });
    expect(existsSync(file)).toBe(true);
    m.dispose();
    other.dispose();
  });
});

describe('runtime limits', () => {
  it('setNumThreads far beyond the CPUs is refused at once, and NaN is printed as NaN', () => {
    const t0 = Date.now();
    expect(() => setNumThreads(1000)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_OPTION' }));
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(() => setNumThreads(NaN)).toThrow(/got NaN/);
  });
});
