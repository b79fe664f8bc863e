// The Llama-family runner (llama, qwen2, mistral) against logits from an independent float64
// implementation of transformers' modeling_llama.py (test/golden/generate_llama.py): GQA, biases,
// tied and untied heads, llama3 and linear rope scaling, both config layouts, a sharded folder;
// then save/load, generation, creation, training and the configs it refuses.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { collatePairs, Model, tokenizePair, TrainStep } from '../lib/index.js';
import { readSafetensorsHeader } from '../lib/io/safetensors.js';
import { dirOf, llamaGolden, logitError } from './model-fixtures.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'tdpo-llama-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function withConfig(name: string, edit: (cfg: Record<string, unknown>) => void): string {
  const d = mkdtempSync(path.join(tmp, 'copy-'));
  cpSync(dirOf(name), d, { recursive: true });
  const cfg = JSON.parse(readFileSync(path.join(d, 'config.json'), 'utf8'));
  edit(cfg);
  writeFileSync(path.join(d, 'config.json'), JSON.stringify(cfg));
  return d;
}
const caseOf = (name: string) => llamaGolden.cases.find((c) => c.name === name)!;

// Their logits with and without padding are checked with the other golden cases, in model.test.ts.
describe('logits match transformers’ Llama-family definitions', () => {
  it('bfloat16 stays within bf16 precision', async () => {
    const c = caseOf('qwen2-bias-untied');
    const model = await Model.load(dirOf(c.name), { dtype: 'bfloat16' });
    const { logits, shape } = await model.forward(Int32Array.from(c.inputIds), c.shape);
    expect(logitError(logits, c.logits, shape[2])).toBeLessThan(3e-2);
    model.dispose();
  });
});

describe('config.json as transformers writes it', () => {
  const logitsOf = async (dir: string) => {
    const c = caseOf('llama3-scaled-headdim');
    const m = await Model.load(dir);
    const out = (await m.forward(Int32Array.from(c.inputIds), c.shape)).logits;
    m.dispose();
    return out;
  };

  it('v5 rope_parameters and v4 rope_theta + rope_scaling mean the same model', async () => {
    const v4 = await logitsOf(dirOf('llama3-scaled-headdim'));
    const v5 = withConfig('llama3-scaled-headdim', (cfg) => {
      cfg.rope_parameters = { ...(cfg.rope_scaling as object), rope_theta: cfg.rope_theta };
      delete cfg.rope_scaling;
      delete cfg.rope_theta;
    });
    expect(await logitsOf(v5)).toEqual(v4);
  });

  it('a model declaring LlamaForCausalLM under another model_type loads as Llama', async () => {
    const d = withConfig('llama-gqa-tied', (cfg) => {
      cfg.model_type = 'smollm';
    });
    const c = caseOf('llama-gqa-tied');
    const m = await Model.load(d);
    const { logits, shape } = await m.forward(Int32Array.from(c.inputIds), c.shape);
    expect(logitError(logits, c.logits, shape[2])).toBeLessThan(1e-4);
    m.dispose();
  });

  // llama-gqa-tied's config is transformers 5's: rope settings in rope_parameters.
  const ropeScaling = (scaling: object) => (cfg: Record<string, unknown>) => {
    delete cfg.rope_parameters;
    cfg.rope_scaling = scaling;
  };
  const refused: Array<[string, (cfg: Record<string, unknown>) => void, string]> = [
    ['an unsupported rope type (v4 layout)', ropeScaling({ rope_type: 'yarn', factor: 4 }), 'rope_scaling.rope_type = "yarn" is not supported'],
    ['an unsupported rope type (v5 layout)', (cfg) => (cfg.rope_parameters = { rope_type: 'dynamic', factor: 2, rope_theta: 1e4 }), 'rope_parameters.rope_type = "dynamic" is not supported'],
    ['another activation', (cfg) => (cfg.hidden_act = 'gelu'), 'config.hidden_act = "gelu" is not supported'],
    ['key/value heads that do not divide the heads', (cfg) => (cfg.num_key_value_heads = 3), 'num_key_value_heads (3) must divide num_attention_heads (4)'],
    ['pretraining_tp > 1', (cfg) => (cfg.pretraining_tp = 2), 'config.pretraining_tp = 2 is not supported'],
    ['partial rotary', (cfg) => (cfg.partial_rotary_factor = 0.5), 'partial_rotary_factor = 0.5 is not supported'],
    ['llama3 scaling without its fields', ropeScaling({ rope_type: 'llama3', factor: 8 }), 'rope_scaling.low_freq_factor must be a number'],
  ];
  for (const [what, edit, message] of refused) {
    it(`refuses ${what}, naming the field`, async () => {
      await expect(Model.load(withConfig('llama-gqa-tied', edit))).rejects.toMatchObject({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining(message) });
    });
  }

  it("transformers' per-type defaults: Qwen2's absent num_key_value_heads is 32, an explicit null the head count; Mistral reads no bias fields", async () => {
    const base = { vocab_size: 64, max_position_embeddings: 32, hidden_size: 64, num_hidden_layers: 1, num_attention_heads: 32, intermediate_size: 64 };
    const count = async (cfg: Record<string, unknown>) => {
      const m = await Model.create(cfg);
      const n = m.parameterCount;
      m.dispose();
      return n;
    };
    const absent = await count({ ...base, model_type: 'qwen2' });
    expect(await count({ ...base, model_type: 'qwen2', num_key_value_heads: null })).toBe(absent); // 32 = the head count here
    const eight = await count({ ...base, model_type: 'qwen2', num_key_value_heads: 8 });
    expect(absent - eight).toBe(2 * (32 - 8) * 2 * (64 + 1)); // k and v: 24 fewer heads of 2 dims, with biases
    expect(await count({ ...base, model_type: 'mistral', attention_bias: true, mlp_bias: true })).toBe(await count({ ...base, model_type: 'mistral' }));
    expect(await count({ ...base, model_type: 'llama', attention_bias: true })).toBeGreaterThan(await count({ ...base, model_type: 'llama' }));
  });

  it("Qwen2's sliding-window layers are refused; a sliding window is refused only where it would change results", async () => {
    const qwen = withConfig('qwen2-bias-untied', (cfg) => (cfg.use_sliding_window = true));
    await expect(Model.load(qwen)).rejects.toMatchObject({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining('use_sliding_window') });
    const c = caseOf('mistral-linear-sharded');
    const [B, T] = c.shape;
    const within = await Model.load(withConfig('mistral-linear-sharded', (cfg) => (cfg.sliding_window = T)));
    const { logits, shape } = await within.forward(Int32Array.from(c.inputIds), c.shape);
    expect(logitError(logits, c.logits, shape[2])).toBeLessThan(1e-4);
    const narrow = await Model.load(withConfig('mistral-linear-sharded', (cfg) => (cfg.sliding_window = T - 1)));
    await expect(narrow.forward(Int32Array.from(c.inputIds), [B, T])).rejects.toMatchObject({ code: 'ERR_TDPO_INPUT', message: expect.stringContaining('sliding_window') });
    within.dispose();
    narrow.dispose();
  });
});

describe('save, generate, create, train', () => {
  for (const name of ['llama-gqa-tied', 'qwen2-bias-untied', 'mistral-linear-sharded']) {
    it(`${name}: load -> save -> load is exact, with transformers' tensor names`, async () => {
      const c = caseOf(name);
      const a = await Model.load(dirOf(name));
      const out = path.join(tmp, `saved-${name}`);
      await a.save(out);
      const b = await Model.load(out);
      const ids = Int32Array.from(c.inputIds);
      expect((await b.forward(ids, c.shape)).logits).toEqual((await a.forward(ids, c.shape)).logits);
      const names = readSafetensorsHeader(path.join(out, 'model.safetensors')).map((t) => t.name);
      expect(names).toContain('model.layers.1.self_attn.k_proj.weight');
      expect(names.includes('lm_head.weight')).toBe(name !== 'llama-gqa-tied'); // tied: not stored, as transformers saves it
      a.dispose();
      b.dispose();
    });
  }

  it("reads generation_config.json's eos_token_id list as its stop ids, and saves it back", async () => {
    const d = withConfig('llama-gqa-tied', (cfg) => (cfg.eos_token_id = 2));
    writeFileSync(path.join(d, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 7] }));
    const m = await Model.load(d);
    expect(m.stopTokenIds).toEqual([2, 7]);
    const out = path.join(tmp, 'with-generation-config');
    await m.save(out);
    expect(JSON.parse(readFileSync(path.join(out, 'generation_config.json'), 'utf8'))).toEqual({ bos_token_id: 1, eos_token_id: [2, 7] });
    m.dispose();
    const plain = await Model.load(withConfig('llama-gqa-tied', (cfg) => (cfg.eos_token_id = 2)));
    expect(plain.stopTokenIds).toEqual([2]); // config.json's, without a generation_config.json
    plain.dispose();
  });

  const prompts = [Int32Array.from([5, 17, 3]), Int32Array.from([40]), Int32Array.from([8, 9, 10, 11, 12])];
  for (const name of ['llama-gqa-tied', 'llama3-scaled-headdim']) {
    it(`${name}: greedy with the cache equals re-running the sequence; a batch equals each prompt alone`, async () => {
      const m = await Model.load(dirOf(name));
      const cached = await m.generate(prompts, { maxNewTokens: 8, temperature: 0 });
      expect(await m.generate(prompts, { maxNewTokens: 8, temperature: 0, useCache: false })).toEqual(cached);
      for (let i = 0; i < prompts.length; i++) {
        expect((await m.generate([prompts[i]], { maxNewTokens: 8, temperature: 0 }))[0]).toEqual(cached[i]);
      }
      m.dispose();
    });
  }

  it('Model.create: deterministic in its seed, with transformers’ initialisation (unit norms)', async () => {
    const config = { model_type: 'qwen2', vocab_size: 64, max_position_embeddings: 32, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64 };
    const a = await Model.create(config, { seed: 5 });
    const b = await Model.create(config, { seed: 5 });
    const ids = Int32Array.from([1, 2, 3, 4]);
    expect((await a.forward(ids, [1, 4])).logits).toEqual((await b.forward(ids, [1, 4])).logits);
    // embed 64x32, per layer: 2 norms, q 32x32 + 32, k and v 16x32 + 16 each, o 32x32, mlp 3 x 64x32; final norm; untied head.
    const perLayer = 2 * 32 + (32 * 32 + 32) + 2 * (16 * 32 + 16) + 32 * 32 + 3 * 64 * 32;
    expect(a.parameterCount).toBe(64 * 32 + 2 * perLayer + 32 + 64 * 32);
    await a.save(path.join(tmp, 'created'));
    const norm = readSafetensorsHeader(path.join(tmp, 'created', 'model.safetensors')).find((t) => t.name === 'model.norm.weight');
    expect(norm).toBeDefined();
    a.dispose();
    b.dispose();
  });

  it('trains: TDPO2 on a tiny Llama lowers the loss on its batch', async () => {
    const policy = await Model.load(dirOf('llama-gqa-tied'));
    const step = await TrainStep.create(policy, { loss: 'tdpo2', optimizer: 'adamw' });
    const o = { maxLength: 16, maxPromptLength: 8, truncationMode: 'keep_start' as const };
    const batch = collatePairs([tokenizePair([3, 4, 5], [6, 8, 10], [7, 9], 1, o), tokenizePair([11, 12], [14, 16], [13, 15, 17], 1, o)]);
    const first = await step.evaluate(batch);
    for (let i = 0; i < 15; i++) {
      await step.accumulate(batch);
      await step.apply(1e-3, 10);
    }
    expect((await step.evaluate(batch)).loss).toBeLessThan(0.5 * first.loss);
    policy.dispose();
  });
});
