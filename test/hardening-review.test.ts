// What a hostile-use review of the library found (2026-12-04), each case as it was reported: a
// NaN gradient scale or a non-finite gradient reaching the weights, an unbounded alpha, train()
// on an unvalidated config, a save that could mix two models' files, optimizer state of another
// model accepted, an SFT batch with nothing to score, token ids silently coerced, a FIFO shard
// blocking the event loop, and sizes that grew memory instead of being refused.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildInfo, collatePairs, defaultConfig, loadConfig, Model, tdpoLossSync, tokenizePair, Tokenizer, train, TrainStep, validateConfig, type TrainConfig } from '../lib/index.js';
import { claimOut } from '../lib/demo/out.js';
import { acquireLock } from '../lib/io/lock.js';
import { rng } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-review-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const V = 32;
const tiny = { model_type: 'gpt2', vocab_size: V, n_positions: 32, n_embd: 16, n_layer: 1, n_head: 2, eos_token_id: 1 };
const trunc = { maxLength: 16, maxPromptLength: 8, truncationMode: 'keep_start' } as const;

function batch(seed: number, n = 4) {
  const r = rng(seed);
  const ids = (k: number) => Array.from({ length: k }, () => 2 + Math.floor(r() * (V - 2)));
  return collatePairs(Array.from({ length: n }, () => tokenizePair(ids(3), ids(4), ids(4), 1, trunc)));
}
const weights = async (m: Model) => (await m.forward(Int32Array.from([2, 3, 4]), [1, 3])).logits;
const code = async (p: Promise<unknown> | (() => unknown)) => {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    return (err as { code?: string }).code ?? `uncoded: ${(err as Error).message}`;
  }
  return 'no error';
};

describe('the train step refuses what would make the weights NaN', () => {
  for (const [name, opts] of [
    ['materialised', { loss: 'tdpo2', fusedLinear: false }],
    ['fused linear', { loss: 'tdpo2', fusedLinear: true }],
    ['sft', { loss: 'sft' }],
  ] as const) {
    it(`${name}: a NaN or infinite gradient scale is ERR_TDPO_OPTION, and the weights stay as they were`, async () => {
      const policy = await Model.create(tiny, { seed: 1 });
      const step = await TrainStep.create(policy, { ...opts, optimizer: 'adamw' });
      const before = await weights(policy);
      for (const scale of [NaN, Infinity, -Infinity]) expect(await code(step.accumulate(batch(1), scale))).toBe('ERR_TDPO_OPTION');
      expect(await step.apply(1e-2, 0)).toBe(0);
      expect(await weights(policy)).toEqual(before);
      policy.dispose();
    });
  }

  it('a gradient that overflows is ERR_TDPO_NONFINITE: the step is not applied, the gradient is cleared, training goes on', async () => {
    const policy = await Model.create(tiny, { seed: 2 });
    const step = await TrainStep.create(policy, { loss: 'tdpo2', optimizer: 'adamw' });
    const before = await weights(policy);
    await step.accumulate(batch(2), 3e38);
    await step.accumulate(batch(3), 3e38); // float32 sums past 3.4e38 are infinite
    expect(await code(step.apply(1e-2, 10))).toBe('ERR_TDPO_NONFINITE');
    expect(await weights(policy)).toEqual(before);
    await step.accumulate(batch(2), 1);
    const norm = await step.apply(1e-2, 10);
    expect(norm).toBeGreaterThan(0);
    expect(Number.isFinite(norm)).toBe(true);
    const after = await weights(policy);
    expect(after).not.toEqual(before);
    expect(after.every(Number.isFinite)).toBe(true);
    policy.dispose();
  });

  it('a learning rate past 1e6 is refused (libtorch holds it as a float)', async () => {
    const policy = await Model.create(tiny, { seed: 2 });
    const step = await TrainStep.create(policy, { loss: 'dpo', optimizer: 'rmsprop' });
    expect(await code(step.apply(1e300, 0))).toBe('ERR_TDPO_OPTION');
    expect(await code(() => loadConfig(null, ['lr=1e300'], { model: tiny, data: { train: 'x' } }))).toBe('ERR_TDPO_CONFIG');
    policy.dispose();
  });

  it('alpha outside [0, 1e6] is refused by the loss, the train step and the config', async () => {
    const B = 2, T = 2;
    const inputs = { policyLogits: new Float32Array(B * T * V), referenceLogits: new Float32Array(B * T * V), labels: new Int32Array([-100, 3, -100, 4]), shape: [B, T, V] as [number, number, number] };
    for (const alpha of [-1e-9, 1e6 + 1, 1e40]) {
      expect(await code(() => tdpoLossSync(inputs, { variant: 'tdpo2', alpha }))).toBe('ERR_TDPO_OPTION');
      expect(await code(() => loadConfig(null, [`loss.alpha=${alpha}`], { model: tiny, data: { train: 'x' } }))).toBe('ERR_TDPO_CONFIG');
    }
    const policy = await Model.create(tiny, { seed: 2 });
    expect(await code(TrainStep.create(policy, { loss: 'tdpo2', alpha: 1e40 }))).toBe('ERR_TDPO_OPTION');
    const edge = tdpoLossSync(inputs, { variant: 'tdpo2', alpha: 1e6, beta: 1e6, grad: true });
    expect(Number.isFinite(edge.loss) && edge.grad!.every(Number.isFinite)).toBe(true);
    policy.dispose();
  });

  it('an SFT batch with no scored token has loss 0 and tokens 0, and adds no gradient (was NaN)', async () => {
    const policy = await Model.create(tiny, { seed: 3 });
    const step = await TrainStep.create(policy, { loss: 'sft', optimizer: 'adamw' });
    const b = batch(4, 1);
    const unscored = { ...b, labels: new Int32Array(b.labels.length).fill(-100) };
    expect(await step.evaluate(unscored)).toMatchObject({ loss: 0, tokens: 0 });
    expect(await step.accumulate(unscored)).toMatchObject({ loss: 0, tokens: 0 });
    const before = await weights(policy);
    expect(await step.apply(1e-2, 10)).toBe(0);
    expect(await weights(policy)).toEqual(before);
    policy.dispose();
  });
});

describe('optimizer state of another model is refused at load, and nothing changes', () => {
  for (const optimizer of ['rmsprop', 'adamw'] as const) {
    it(`${optimizer}: another n_positions, same tensor count: ERR_TDPO_CHECKPOINT naming the shapes; the next steps are as without the load`, async () => {
      const other = await Model.create({ ...tiny, n_positions: 40 }, { seed: 4 });
      const otherStep = await TrainStep.create(other, { loss: 'dpo', optimizer });
      await otherStep.accumulate(batch(5));
      await otherStep.apply(1e-3, 10);
      const file = path.join(dir, `other-${optimizer}.pt`);
      await otherStep.saveOptimizer(file);

      const run = async (tryLoad: boolean) => {
        const policy = await Model.create(tiny, { seed: 5 });
        const step = await TrainStep.create(policy, { loss: 'dpo', optimizer });
        await step.accumulate(batch(6));
        await step.apply(1e-3, 10); // state exists before the refused load
        if (tryLoad) {
          const err = await step.loadOptimizer(file).catch((e: Error & { code?: string }) => e);
          expect(err).toMatchObject({ code: 'ERR_TDPO_CHECKPOINT' });
          expect((err as Error).message).toMatch(/\[40, 16\], its state \[32, 16\]|\[32, 16\], its state \[40, 16\]/);
        }
        await step.accumulate(batch(7));
        await step.apply(1e-3, 10);
        const w = await weights(policy);
        policy.dispose();
        return w;
      };
      expect(await run(true)).toEqual(await run(false));
      other.dispose();
    });
  }
});

describe('Model.save never leaves a mixed folder', () => {
  it('a config that is not JSON data (a BigInt, a cycle) is refused by create, not after the weights were written', async () => {
    expect(await code(Model.create({ ...tiny, extra: 1n } as never))).toBe('ERR_TDPO_CONFIG');
    const cyclic: Record<string, unknown> = { ...tiny };
    cyclic.self = cyclic;
    expect(await code(Model.create(cyclic as never))).toBe('ERR_TDPO_CONFIG');
  });

  it('the config is a snapshot taken at create: a later change of the caller\'s object is not saved', async () => {
    const cfg = { ...tiny };
    const m = await Model.create(cfg, { seed: 1 });
    cfg.n_layer = 7;
    const out = path.join(dir, 'snapshot');
    await m.save(out);
    expect(JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')).n_layer).toBe(1);
    m.dispose();
  });

  it('config.json being a folder: ERR_TDPO_IO before anything is written; the folder keeps its model', async () => {
    const out = path.join(dir, 'cfgdir');
    const a = await Model.create(tiny, { seed: 1 });
    await a.save(out);
    const weightsBefore = readFileSync(path.join(out, 'model.safetensors'));
    rmSync(path.join(out, 'config.json'));
    mkdirSync(path.join(out, 'config.json'));
    const b = await Model.create(tiny, { seed: 2 });
    expect(await code(b.save(out))).toBe('ERR_TDPO_IO');
    expect(readFileSync(path.join(out, 'model.safetensors'))).toEqual(weightsBefore);
    expect(readdirSync(out).sort()).toEqual(['config.json', 'model.safetensors']);
    a.dispose();
    b.dispose();
  });

  it("a model without a generation config removes the folder's earlier generation_config.json (another model's stop ids)", async () => {
    const out = path.join(dir, 'gencfg');
    mkdirSync(out, { recursive: true });
    const a = await Model.create(tiny, { seed: 1 });
    await a.save(out);
    writeFileSync(path.join(out, 'generation_config.json'), JSON.stringify({ eos_token_id: [7, 8] }));
    const withGen = await Model.load(out);
    expect(withGen.stopTokenIds).toEqual([7, 8]);
    withGen.dispose();
    const b = await Model.create(tiny, { seed: 2 });
    await b.save(out);
    expect(existsSync(path.join(out, 'generation_config.json'))).toBe(false);
    const without = await Model.load(out);
    expect(without.stopTokenIds).toEqual([1]);
    without.dispose();
    a.dispose();
    b.dispose();
  });

  it('a save begun before dispose() finishes; a path that is not a string is ERR_TDPO_TYPE', async () => {
    const m = await Model.create(tiny, { seed: 1 });
    const out = path.join(dir, 'disposed');
    const saving = m.save(out);
    m.dispose();
    await saving;
    const saved = await Model.load(out);
    expect(saved.parameterCount).toBeGreaterThan(0);
    saved.dispose();
    const n = await Model.create(tiny, { seed: 1 });
    expect(await code(n.save(123 as never))).toBe('ERR_TDPO_TYPE');
    n.dispose();
  });
});

describe('Model.load and Model.create refuse early', () => {
  it('config.json, the shard index or generation_config.json holding null: ERR_TDPO_CHECKPOINT', async () => {
    const m = await Model.create(tiny, { seed: 1 });
    for (const file of ['config.json', 'generation_config.json']) {
      const out = path.join(dir, `null-${file}`);
      await m.save(out);
      writeFileSync(path.join(out, file), 'null');
      expect(await code(Model.load(out))).toBe('ERR_TDPO_CHECKPOINT');
    }
    const out = path.join(dir, 'null-index');
    await m.save(out);
    rmSync(path.join(out, 'model.safetensors'));
    writeFileSync(path.join(out, 'model.safetensors.index.json'), 'null');
    expect(await code(Model.load(out))).toBe('ERR_TDPO_CHECKPOINT');
    m.dispose();
  });

  it('a shard that is a FIFO is ERR_TDPO_CHECKPOINT, without blocking the event loop', async () => {
    const m = await Model.create(tiny, { seed: 1 });
    const out = path.join(dir, 'fifo');
    await m.save(out);
    m.dispose();
    rmSync(path.join(out, 'model.safetensors'));
    writeFileSync(path.join(out, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'transformer.wte.weight': 'shard.safetensors' } }));
    execFileSync('mkfifo', [path.join(out, 'shard.safetensors')]);
    expect(await code(Model.load(out))).toBe('ERR_TDPO_CHECKPOINT');
  });

  it('2^40 layers are refused at once (the names alone would fill memory)', async () => {
    const t0 = Date.now();
    expect(await code(Model.create({ ...tiny, n_layer: 2 ** 40 }))).toBe('ERR_TDPO_CONFIG');
    expect(Date.now() - t0).toBeLessThan(2000);
  });
});

// A second review (2026-12-04, the Llama family): rotary settings that pass "> 0" yet make every
// logit NaN, and a Mistral window that stopped a run at its first long batch.
describe('Llama-family configs refused before they compute garbage or fail mid-run', () => {
  const llama = { model_type: 'llama', vocab_size: V, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 32, eos_token_id: 1 };

  it('rope_theta or a rope factor so small that the rotary angles overflow float32: ERR_TDPO_CONFIG', async () => {
    for (const extra of [{ rope_theta: 1e-50 }, { rope_scaling: { rope_type: 'linear', factor: 1e-300 } }, { rope_scaling: { rope_type: 'llama3', factor: 1e-300, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8 } }]) {
      expect(await code(Model.create({ ...llama, ...extra })), JSON.stringify(extra)).toBe('ERR_TDPO_CONFIG');
    }
    expect(await code(Model.create({ model_type: 'gpt_neox', vocab_size: V, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 32, rotary_pct: 1, rotary_emb_base: 1e-50 }))).toBe('ERR_TDPO_CONFIG');
    // Large and small values that stay finite still load, and compute finite logits.
    for (const extra of [{ rope_theta: 1e300 }, { rope_theta: 1e-3 }, { rope_scaling: { rope_type: 'linear', factor: 1e-3 } }]) {
      const m = await Model.create({ ...llama, ...extra }, { seed: 1 });
      expect((await weights(m)).every(Number.isFinite), JSON.stringify(extra)).toBe(true);
      m.dispose();
    }
  });

  it('max_length past a Mistral sliding_window is refused before the first step', async () => {
    const data = path.join(dir, 'window.jsonl');
    const line = (n: number) => JSON.stringify({ prompt_ids: [2, 3], chosen_ids: Array(n).fill(4), rejected_ids: Array(n).fill(5) });
    writeFileSync(data, `${[...Array.from({ length: 8 }, () => line(2)), line(40)].join('\n')}\n`);
    const c = loadConfig(null, [], {
      model: { ...llama, model_type: 'mistral', max_position_embeddings: 64, num_key_value_heads: 2, sliding_window: 16 },
      data: { train: data, format: 'tokenized', eval_size: 0 },
      batch_size: 2,
      max_length: 48,
      max_prompt_length: 8,
      eval_every: 0,
      output_dir: path.join(dir, 'window-out'),
    });
    const steps: number[] = [];
    await expect(train(c, { log: () => {}, onStep: (m) => steps.push(m.step) })).rejects.toMatchObject({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining('sliding_window of 16') });
    expect(steps).toEqual([]);
    await train({ ...c, max_length: 16, max_prompt_length: 4 }, { log: () => {} }); // within the window it trains
  });
});

describe('token ids are checked, not coerced into other tokens', () => {
  it('tokenizePair refuses non-integers, NaN, strings, negatives and ids past int32, and bad truncation options', () => {
    for (const bad of [3.9, NaN, '7', -1, 2 ** 32 + 5, 2 ** 31]) {
      expect(() => tokenizePair([2, bad as number], [3], [4], 1, trunc)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_INPUT' }));
      expect(() => tokenizePair([2], [3], [4], bad as number, trunc)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_INPUT' }));
    }
    for (const o of [{ ...trunc, maxLength: NaN }, { ...trunc, maxPromptLength: 16 }, { ...trunc, truncationMode: 'middle' }]) {
      expect(() => tokenizePair([2], [3], [4], 1, o as never)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_INPUT' }));
    }
    expect(() => tokenizePair(5 as never, [3], [4], 1, trunc)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_TYPE' }));
    const t0 = Date.now();
    expect(() => tokenizePair({ length: 2 ** 31 } as never, [3], [4], 1, trunc)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_TYPE' }));
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(tokenizePair(Int32Array.from([2]), [3], [4], 1, trunc)).toEqual(tokenizePair([2], [3], [4], 1, trunc));
  });

  it('collatePairs refuses no pairs and hand-made rows with bad ids; 150,000 rows do not overflow the stack', () => {
    expect(() => collatePairs([])).toThrow(expect.objectContaining({ code: 'ERR_TDPO_INPUT' }));
    const p = tokenizePair([2], [3], [4], 1, trunc);
    expect(() => collatePairs([{ ...p, chosen: { inputIds: [2, 1.5], labels: [-100, 3] } }])).toThrow(expect.objectContaining({ code: 'ERR_TDPO_INPUT' }));
    expect(() => collatePairs([{ ...p, chosen: { inputIds: [2, 3], labels: [-100, -7] } }])).toThrow(expect.objectContaining({ code: 'ERR_TDPO_INPUT' }));
    expect(() => collatePairs([p], 1e10)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_INPUT' }));
    expect(collatePairs(Array.from({ length: 75_000 }, () => p)).shape).toEqual([150_000, 3]);
  });

  it("Tokenizer.decode takes arrays and typed arrays only: { length: 2^40 } is refused at once", () => {
    const tok = Tokenizer.gpt2();
    const t0 = Date.now();
    expect(() => tok.decode({ length: 2 ** 40 } as never, { skipUnknown: true })).toThrow(expect.objectContaining({ code: 'ERR_TDPO_TYPE' }));
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(tok.decode(Int32Array.from([31373]))).toBe(tok.decode([31373]));
  });
});

describe('train() and evaluate() validate the config they are given', () => {
  const data = path.join(dir, 'data.jsonl');
  writeFileSync(data, `${Array.from({ length: 8 }, () => JSON.stringify({ prompt_ids: [2, 3], chosen_ids: [4, 6], rejected_ids: [5, 7] })).join('\n')}\n`);
  const good = (out: string): TrainConfig => loadConfig(null, [], { model: tiny, data: { train: data, format: 'tokenized', eval_size: 0 }, batch_size: 2, max_length: 8, max_prompt_length: 4, max_steps: 1, warmup_steps: 0, output_dir: out });

  it('batch_size 0 (was an endless loop filling metrics.jsonl), null, {} and missing keys: ERR_TDPO_CONFIG before anything is written', async () => {
    const out = path.join(dir, 'unvalidated');
    for (const c of [{ ...good(out), batch_size: 0 }, { ...good(out), max_steps: 0 }, { ...good(out), n_epochs: NaN }, null, {}, { ...defaultConfig, model: tiny, data: undefined }]) {
      expect(await code(train(c as never))).toBe('ERR_TDPO_CONFIG');
      expect(await code(() => validateConfig(c as never))).toBe('ERR_TDPO_CONFIG');
    }
    expect(existsSync(out)).toBe(false);
    const { evaluate } = await import('../lib/index.js');
    expect(await code(evaluate({ ...good(out), batch_size: 0 }, out))).toBe('ERR_TDPO_CONFIG');
  });

  it('an empty prompt with a response cut to one token leaves nothing to score: ERR_TDPO_DATA naming file:line (was a NaN SFT loss)', async () => {
    const f = path.join(dir, 'unscored.jsonl');
    writeFileSync(f, `${JSON.stringify({ prompt_ids: [2], chosen_ids: [4], rejected_ids: [5] })}\n${JSON.stringify({ prompt_ids: [], chosen_ids: [4, 6], rejected_ids: [5, 7] })}\n`);
    const c = loadConfig(null, [], { model: tiny, loss: { name: 'sft' }, data: { train: f, format: 'tokenized', eval_size: 0 }, batch_size: 1, max_length: 2, max_prompt_length: 1, max_steps: 1, warmup_steps: 0, output_dir: path.join(dir, 'unscored') });
    const err = await train(c).catch((e: Error) => e);
    expect(err).toMatchObject({ code: 'ERR_TDPO_DATA' });
    expect((err as Error).message).toMatch(/unscored\.jsonl:2: .*no token to score/);
  });

  it('a data file that is a folder is ERR_TDPO_DATA; a UTF-8 byte-order mark before the first line is accepted', async () => {
    const folder = path.join(dir, 'folder.jsonl');
    mkdirSync(folder, { recursive: true });
    expect(await code(train({ ...good(path.join(dir, 'folder-run')), data: { ...good('x').data, train: folder } }))).toBe('ERR_TDPO_DATA');
    const bom = path.join(dir, 'bom.jsonl');
    writeFileSync(bom, `\uFEFF${readFileSync(data, 'utf8')}`);
    const r = await train({ ...good(path.join(dir, 'bom-run')), data: { ...good('x').data, train: bom } });
    expect(r.steps).toBe(1);
  });

  it("an output_dir holding a model (its config.json), a file named final, or run files beside no run config is refused, and left as it was", async () => {
    const modelDir = path.join(dir, 'as-output');
    const m = await Model.create(tiny, { seed: 1 });
    await m.save(modelDir);
    m.dispose();
    const before = readFileSync(path.join(modelDir, 'config.json'), 'utf8');
    expect(await code(train({ ...good(modelDir), model: modelDir }))).toBe('ERR_TDPO_CONFIG');
    expect(readFileSync(path.join(modelDir, 'config.json'), 'utf8')).toBe(before);
    for (const [name, text] of [['final', 'my notes'], ['step-2', 'x'], ['metrics.jsonl', '{"mine":1}\n']]) {
      const out = path.join(dir, `foreign-${name}`);
      mkdirSync(out, { recursive: true });
      writeFileSync(path.join(out, name), text);
      for (const options of [{}, { overwrite: true }, { resume: true }]) {
        const err = await train(good(out), options).catch((e: Error) => e);
        expect(err).toMatchObject({ code: 'ERR_TDPO_CONFIG' });
        expect((err as Error).message).toContain(name);
      }
      expect(readdirSync(out)).toEqual([name]);
      expect(readFileSync(path.join(out, name), 'utf8')).toBe(text);
    }
  });

  it("a run's folder that lost its config.json still resumes (its checkpoints say it is a run's)", async () => {
    const out = path.join(dir, 'lost-config');
    await train({ ...good(out), save_every: 1, max_steps: 2 });
    rmSync(path.join(out, 'final'), { recursive: true });
    rmSync(path.join(out, 'config.json'));
    const log: string[] = [];
    const r = await train({ ...good(out), save_every: 1, max_steps: 2 }, { resume: true, log: (l) => log.push(l) });
    expect(r.steps).toBe(2);
    expect(log.join('\n')).toMatch(/config\.json is missing/);
  });

  it('a checkpoint whose trainer.json has a negative step is ERR_TDPO_RESUME', async () => {
    const out = path.join(dir, 'negstep');
    await train(good(out));
    const state = path.join(out, 'final', 'trainer.json');
    writeFileSync(state, JSON.stringify({ ...JSON.parse(readFileSync(state, 'utf8')), step: -3 }));
    expect(await code(train({ ...good(out), max_steps: 2 }, { resume: true, allowChange: ['max_steps'] }))).toBe('ERR_TDPO_RESUME');
  });

  // A build without Gloo refuses a CPU run sooner, for its backend: with no distributed backend at
  // all, or with NCCL alone (a build against PyTorch's CUDA wheel, which ships no Gloo headers).
  it.skipIf(!buildInfo().distributedBackends.includes('gloo'))('distributed ranks and sizes past a C int are refused, not wrapped (2^32 + 1 was world size 1)', async () => {
    const err = await train(good(path.join(dir, 'dist')), { distributed: { rank: 0, worldSize: 2 ** 32 + 1, masterPort: 29999, timeoutMs: 1000 } }).catch((e: Error) => e);
    expect(err).toMatchObject({ code: 'ERR_TDPO_OPTION' });
    expect((err as Error).message).toMatch(/worldSize must be an integer < 2\^31/);
  });

  it('an unknown YAML tag is an error naming the file, not a warning on stderr and a dropped value', () => {
    const f = path.join(dir, 'tag.yaml');
    writeFileSync(f, 'lr: !!js/function 1\n');
    expect(() => loadConfig(f)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_CONFIG', message: expect.stringMatching(/tag\.yaml:1:\d+: Unresolved tag/) }));
  });
});

describe('the CLI, as the review found it', () => {
  const cli = path.resolve(__dirname, '..', 'bin', 'tdpo.js');
  const run = (args: string[], env: NodeJS.ProcessEnv = {}, cwd = dir) =>
    spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', cwd, env: { ...process.env, ...env } });

  it("demo --out: '' is a usage error; a folder with report files but no demo stages, or a regular file, is refused untouched", () => {
    expect(run(['demo', '--quick', '--out', '']).status).toBe(2);
    const mine = path.join(dir, 'my-reports');
    mkdirSync(mine, { recursive: true });
    writeFileSync(path.join(mine, 'report.md'), 'MY OWN REPORT');
    const r = run(['demo', '--quick', '--out', mine]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/holds report\.md but no demo stages/);
    expect(readdirSync(mine)).toEqual(['report.md']);
    const file = path.join(dir, 'a-file');
    writeFileSync(file, 'x');
    expect(run(['demo', '--quick', '--out', file]).stderr).toMatch(/cannot use .*a-file as the output folder/);
  });

  it("claimOut: report files are the demo's beside its stages or its own metrics.json (stages deleted to free space), else someone's", () => {
    const out = path.join(dir, 'claim');
    mkdirSync(out, { recursive: true });
    writeFileSync(path.join(out, 'report.md'), '# report');
    expect(() => claimOut(out, () => {})).toThrow(expect.objectContaining({ code: 'ERR_TDPO_DEMO_OUT' }));
    writeFileSync(path.join(out, 'metrics.json'), JSON.stringify({ run: {}, settings: {}, summary: [], verdicts: [], points: [] }));
    claimOut(out, () => {}).release();
    writeFileSync(path.join(out, 'notes.txt'), 'mine');
    expect(() => claimOut(out, () => {})).toThrow(expect.objectContaining({ code: 'ERR_TDPO_DEMO_OUT', message: expect.stringContaining('notes.txt') }));
    expect(existsSync(path.join(out, '.lock'))).toBe(false);
  });

  it('demo --out used by a live run: ERR_TDPO_LOCKED naming it, before any stage is touched (two demos once mixed one folder)', () => {
    const out = path.join(dir, 'busy-demo');
    mkdirSync(path.join(out, 'stages-quick'), { recursive: true });
    writeFileSync(path.join(out, 'stages-quick', 'settings.json'), '{}');
    const lock = acquireLock(out);
    try {
      const r = run(['demo', '--quick', '--fresh', '--out', out]);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/is in use by another run \(pid \d+/);
      expect(readFileSync(path.join(out, 'stages-quick', 'settings.json'), 'utf8')).toBe('{}');
    } finally {
      lock.release();
    }
  });

  it("generate: a temperature or top-p that is 0 in float32 samples greedily (was 'logits are not finite'); empty values are usage errors", async () => {
    const m = await Model.create({ ...tiny, vocab_size: 50257, n_positions: 64 }, { seed: 3 });
    const model = path.join(dir, 'gen-model');
    await m.save(model);
    m.dispose();
    const gen = (...flags: string[]) => run(['generate', '--model', model, '--prompt', 'hi', '--max-new-tokens', '4', ...flags]);
    const greedy = gen('--temperature', '0');
    expect(greedy.status, greedy.stderr).toBe(0);
    for (const flags of [['--temperature', '1e-46'], ['--top-p', '1e-50', '--temperature', '1e-30']]) {
      const r = gen(...flags);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe(greedy.stdout);
    }
    for (const flag of ['--temperature', '--top-p', '--max-new-tokens', '--top-k', '--seed']) expect(gen(flag, '').status).toBe(2);
  });

  it('the launcher: workers that cannot be started are named by rank, and it exits 1 (it used to crash, leaving workers running)', async () => {
    // The launcher runs from a copy of node that is removed once it has started (spawn returns
    // after the exec), so each worker's spawn of process.execPath fails with ENOENT: the path of a
    // child that emits 'error' and never 'exit', as EMFILE or EAGAIN take it on a loaded machine.
    const node = path.join(dir, 'node-copy');
    copyFileSync(process.execPath, node);
    chmodSync(node, 0o755);
    const child = spawn(node, [cli, 'train', '-c', path.join(dir, 'never-read.yaml'), '--nproc-per-node', '2'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    rmSync(node);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | string | null>((resolve) => child.on('close', (c, sig) => resolve(c ?? sig)));
    expect(code, stderr).toBe(1);
    for (const rank of [0, 1]) expect(stderr).toMatch(new RegExp(`rank ${rank} could not be started: spawn \\S*node-copy.* ENOENT`));
    expect(stderr).toMatch(/the run failed: rank 0 failed first/);
    expect(stderr).not.toMatch(/TypeError|is not a function/);
  });

  it("the launcher: RANK='', --master-port 70000 and --dist-timeout 1e300 (past Node's timers) are usage errors", () => {
    const cfg = path.join(dir, 'never-read.yaml');
    const rank = run(['train', '-c', cfg], { RANK: '', WORLD_SIZE: '1' });
    expect(rank.status).toBe(2);
    expect(rank.stderr).toMatch(/RANK must be an integer in \[0, 2147483647\], got ''/);
    const port = run(['train', '-c', cfg, '--nproc-per-node', '2', '--master-port', '70000']);
    expect(port.status).toBe(2);
    expect(port.stderr).toMatch(/--master-port must be an integer in \[1, 65535\], got '70000'/);
    expect(port.stderr).not.toMatch(/started 2 workers/);
    const r = run(['train', '-c', cfg, '--nproc-per-node', '2', '--dist-timeout', '1e300']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--dist-timeout must be a number of seconds in \[0\.001, 1000000\]/);
    expect(r.stderr).not.toMatch(/TimeoutOverflowWarning/);
  });
});
