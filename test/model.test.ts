// The runners' logits against independent implementations of the Hugging Face definitions
// (test/golden/generate_models.py, generate_llama.py), with and without padding; GPT-2 and
// GPT-NeoX save/load round trips and bad checkpoints (the Llama family's: model-llama.test.ts).
import { copyFileSync, cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Model } from '../lib/index.js';
import { dirOf, golden, llamaGolden, logitError, type ModelCase } from './model-fixtures.js';
import { readSafetensorsHeader } from '../lib/io/safetensors.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'tdpo-model-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A copy of a golden checkpoint folder in tmp, for tests that break it. */
function copy(name: string): string {
  const d = mkdtempSync(path.join(tmp, 'copy-'));
  cpSync(dirOf(name), d, { recursive: true });
  return d;
}
/** A copy whose config.json `edit` has changed. */
function withConfig(name: string, edit: (cfg: Record<string, unknown>) => void): string {
  const d = copy(name);
  const cfg = JSON.parse(readFileSync(path.join(d, 'config.json'), 'utf8'));
  edit(cfg);
  writeFileSync(path.join(d, 'config.json'), JSON.stringify(cfg));
  return d;
}

describe('logits match the Hugging Face definitions', () => {
  for (const c of [...golden.cases, ...llamaGolden.cases]) {
    it(`${c.name}: with and without padding`, async () => {
      const model = await Model.load(dirOf(c.name));
      const [B, T] = c.shape;
      const ids = Int32Array.from(c.inputIds);
      const plain = await model.forward(ids, [B, T]);
      const V = plain.shape[2];
      expect(plain.shape).toEqual([B, T, V]);
      expect(logitError(plain.logits, c.logits, V, () => true)).toBeLessThan(1e-4);
      const mask = Int32Array.from(c.attentionMask);
      const masked = await model.forward(ids, [B, T], { attentionMask: mask });
      // Padded positions' logits carry no meaning; every real token's must match.
      expect(logitError(masked.logits, c.maskedLogits, V, (row) => mask[row] === 1)).toBeLessThan(1e-4);
      model.dispose();
    });
  }

  it('right padding leaves the real tokens exactly as without it', async () => {
    const c = golden.cases[0];
    const model = await Model.load(dirOf(c.name));
    const [B, T] = c.shape;
    const ids = Int32Array.from(c.inputIds);
    const mask = new Int32Array(B * T).fill(1);
    mask.fill(0, T - 2, T); // row 0: last two positions padding
    const a = await model.forward(ids, [B, T]);
    const b = await model.forward(ids, [B, T], { attentionMask: mask });
    const V = a.shape[2];
    expect(b.logits.subarray(0, (T - 2) * V)).toEqual(a.logits.subarray(0, (T - 2) * V));
  });
});

describe('config.json as each transformers version writes it', () => {
  const neox = golden.cases.find((x) => x.name === 'neox-sequential-sharded')!; // rotary_pct 0.5, base 500
  const pythia = golden.cases.find((x) => x.name === 'pythia-tiny-bf16')!; // rotary_pct 0.25, base 10000
  const logitsOf = async (dir: string, c: ModelCase) => {
    const m = await Model.load(dir);
    const out = await m.forward(Int32Array.from(c.inputIds), c.shape);
    m.dispose();
    return out;
  };
  const matches = async (dir: string, c: ModelCase) => {
    const { logits, shape } = await logitsOf(dir, c);
    return logitError(logits, c.logits, shape[2], () => true);
  };
  const dropRotary = (cfg: Record<string, unknown>) => {
    delete cfg.rotary_pct;
    delete cfg.rotary_emb_base;
  };

  it('v5: rope_parameters { rope_theta, partial_rotary_factor }', async () => {
    const d = withConfig(neox.name, (cfg) => {
      dropRotary(cfg);
      cfg.rope_parameters = { rope_type: 'default', rope_theta: 500, partial_rotary_factor: 0.5 };
    });
    expect(await matches(d, neox)).toBeLessThan(1e-4);
  });
  it('v4.45+: top-level partial_rotary_factor and rope_theta', async () => {
    const d = withConfig(neox.name, (cfg) => {
      dropRotary(cfg);
      Object.assign(cfg, { partial_rotary_factor: 0.5, rope_theta: 500, rope_scaling: null });
    });
    expect(await matches(d, neox)).toBeLessThan(1e-4);
  });
  it("absent rotary fields take transformers' defaults (0.25, 10000)", async () => {
    expect(await matches(withConfig(pythia.name, dropRotary), pythia)).toBeLessThan(1e-4);
    // ...and they matter: the same weights with rotary_pct 0.5 give other logits.
    expect(await matches(withConfig(pythia.name, (cfg) => (cfg.rotary_pct = 0.5)), pythia)).toBeGreaterThan(1e-3);
  });
  it('rope scaling we do not implement is refused, naming the field', async () => {
    const scaled = withConfig(neox.name, (cfg) => (cfg.rope_scaling = { type: 'linear', factor: 2 }));
    await expect(Model.load(scaled)).rejects.toMatchObject({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining('config.rope_scaling.rope_type = "linear"') });
    const v5 = withConfig(neox.name, (cfg) => (cfg.rope_parameters = { rope_type: 'yarn', factor: 4 }));
    await expect(Model.load(v5)).rejects.toMatchObject({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining('config.rope_parameters.rope_type = "yarn"') });
    const bad = withConfig(neox.name, (cfg) => (cfg.rope_parameters = { rope_theta: 'big' }));
    await expect(Model.load(bad)).rejects.toMatchObject({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining('config.rope_parameters.rope_theta') });
  });
  it('GPT-2 with an untied lm_head is refused (its lm_head.weight would be ignored)', async () => {
    const d = withConfig('gpt2-tiny', (cfg) => (cfg.tie_word_embeddings = false));
    await expect(Model.load(d)).rejects.toMatchObject({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining('config.tie_word_embeddings') });
  });
});

describe('save and load', () => {
  for (const name of ['gpt2-tiny', 'pythia-tiny-bf16', 'neox-sequential-sharded']) {
    it(`${name}: load -> save -> load is exact, with standard tensor names`, async () => {
      const c = golden.cases.find((x) => x.name === name)!;
      const a = await Model.load(dirOf(name));
      const out = path.join(tmp, name);
      await a.save(out);
      const b = await Model.load(out);
      const ids = Int32Array.from(c.inputIds);
      expect((await b.forward(ids, c.shape)).logits).toEqual((await a.forward(ids, c.shape)).logits);
      expect(b.config).toEqual(a.config);
      const names = readSafetensorsHeader(path.join(out, 'model.safetensors')).map((t) => t.name);
      if (name.startsWith('gpt2')) {
        expect(names).toContain('transformer.h.0.attn.c_attn.weight');
        expect(names).not.toContain('lm_head.weight'); // tied to wte, as transformers saves it
      } else {
        expect(names).toContain('gpt_neox.layers.1.attention.query_key_value.weight');
        expect(names).toContain('embed_out.weight');
      }
      a.dispose();
      b.dispose();
    });
  }

  it('loads in bfloat16 too', async () => {
    const c = golden.cases.find((x) => x.name === 'pythia-tiny-bf16')!;
    const model = await Model.load(dirOf(c.name), { dtype: 'bfloat16' });
    const { logits, shape } = await model.forward(Int32Array.from(c.inputIds), c.shape);
    // bf16 arithmetic: ~3 significant digits.
    expect(logitError(logits, c.logits, shape[2], () => true)).toBeLessThan(3e-2);
  });
});

describe('Model.create', () => {
  const config = { model_type: 'gpt_neox', vocab_size: 50, max_position_embeddings: 16, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, rotary_pct: 0.5 };
  it('is deterministic in its seed', async () => {
    const ids = Int32Array.from([1, 2, 3, 4]);
    const run = async (seed: number) => (await (await Model.create(config, { seed })).forward(ids, [1, 4])).logits;
    expect(await run(3)).toEqual(await run(3));
    expect(await run(3)).not.toEqual(await run(4));
  });
  it('counts its parameters', async () => {
    const m = await Model.create({ model_type: 'gpt2', vocab_size: 10, n_positions: 8, n_embd: 8, n_layer: 1, n_head: 2 });
    // wte 80 + wpe 64 + layer (2*8 + 8*24+24 + 64+8 + 2*8 + 8*32+32 + 32*8+8) + ln_f 16
    expect(m.parameterCount).toBe(80 + 64 + (16 + 216 + 72 + 16 + 288 + 264) + 16);
  });
});

describe('bad checkpoints and inputs', () => {
  const rejects = async (p: Promise<unknown>, code: string, text: string) => {
    const err = await p.then(() => undefined, (e: unknown) => e as Error & { code: string });
    expect(err, 'expected a rejection').toBeDefined();
    expect(err!.code).toBe(code);
    expect(err!.message).toContain(text);
  };

  it('an unknown model_type', async () => {
    const d = withConfig('gpt2-tiny', (cfg) => {
      for (const k of Object.keys(cfg)) delete cfg[k];
      cfg.model_type = 'mamba';
    });
    await rejects(Model.load(d), 'ERR_TDPO_CONFIG', 'model_type "mamba"');
  });
  it('a missing config field', async () => {
    const d = withConfig('gpt2-tiny', (cfg) => delete cfg.n_head);
    await rejects(Model.load(d), 'ERR_TDPO_CONFIG', 'config.n_head');
  });
  it('a config the checkpoint does not fit (wrong shape)', async () => {
    const d = withConfig('gpt2-tiny', (cfg) => (cfg.vocab_size = 98));
    await rejects(Model.load(d), 'ERR_TDPO_CHECKPOINT', "tensor 'wte.weight'");
  });
  it('a missing tensor', async () => {
    const d = copy('neox-sequential-sharded');
    const index = path.join(d, 'model.safetensors.index.json');
    const idx = JSON.parse(readFileSync(index, 'utf8'));
    // Point the index at shard 1 only, and drop shard 2's tensors from it.
    for (const [k, v] of Object.entries(idx.weight_map)) if (String(v).includes('00002')) delete idx.weight_map[k];
    writeFileSync(index, JSON.stringify(idx));
    await rejects(Model.load(d), 'ERR_TDPO_CHECKPOINT', 'is missing from the checkpoint');
  });
  it('an unexpected tensor', async () => {
    const d = copy('gpt2-tiny');
    copyFileSync(path.join(dirOf('pythia-tiny-bf16'), 'model.safetensors'), path.join(d, 'model.safetensors'));
    await rejects(Model.load(d), 'ERR_TDPO_CHECKPOINT', "unexpected tensor 'gpt_neox.");
  });
  it('a truncated file', async () => {
    const d = copy('gpt2-tiny');
    const f = path.join(d, 'model.safetensors');
    truncateSync(f, 5000);
    await rejects(Model.load(d), 'ERR_TDPO_CHECKPOINT', 'outside the');
  });
  it('a corrupt header', async () => {
    const d = copy('gpt2-tiny');
    const f = path.join(d, 'model.safetensors');
    const buf = readFileSync(f);
    buf.write('#', 8); // the header's opening brace
    writeFileSync(f, buf);
    await rejects(Model.load(d), 'ERR_TDPO_CHECKPOINT', 'not valid JSON');
    buf.writeBigUInt64LE(1n << 40n, 0);
    writeFileSync(f, buf);
    await rejects(Model.load(d), 'ERR_TDPO_CHECKPOINT', 'does not fit');
  });
  it('no weights at all', async () => {
    const d = copy('gpt2-tiny');
    rmSync(path.join(d, 'model.safetensors'));
    await rejects(Model.load(d), 'ERR_TDPO_CHECKPOINT', 'neither model.safetensors');
  });
  it('ids outside the vocabulary, a sequence past the position table, a disposed model', async () => {
    const model = await Model.load(dirOf('gpt2-tiny'));
    await rejects(model.forward(Int32Array.from([1, 97]), [1, 2]), 'ERR_TDPO_INPUT', 'inputIds[1] = 97');
    await rejects(model.forward(new Int32Array(17), [1, 17]), 'ERR_TDPO_INPUT', 'exceeds the model');
    await rejects(model.forward(new Int32Array(3), [1, 2]), 'ERR_TDPO_SHAPE', 'inputIds');
    await rejects(model.forward(new Int32Array(2), [1, 2], { attentionMask: Int32Array.from([1, 2]) }), 'ERR_TDPO_INPUT', 'attentionMask[1]');
    model.dispose();
    await expect(model.forward(new Int32Array(2), [1, 2])).rejects.toMatchObject({ code: 'ERR_TDPO_DISPOSED' });
  });
});

// Without gradients, attention runs a few sequences at a time once a batch's float32 scores pass
// 32 MB (src/models/attention.cc): at 4 heads x 512 x 512 that is 8 sequences per slice, so a
// batch of 11 runs as 8 + 3. Each sequence's logits must be what it gets alone.
describe('attention over a batch whose scores are sliced', () => {
  it('equals each sequence run alone, with padding on either side', async () => {
    const T = 512;
    const V = 64;
    const m = await Model.create({ model_type: 'gpt2', vocab_size: V, n_positions: T, n_embd: 32, n_layer: 1, n_head: 4 }, { seed: 3 });
    const B = 11;
    const ids = new Int32Array(B * T);
    const mask = new Int32Array(B * T);
    const lengths = Array.from({ length: B }, (_, b) => T - 37 * b);
    for (let b = 0; b < B; b++) {
      const left = b % 2 === 1; // odd rows left-padded, even rows right-padded
      for (let t = 0; t < lengths[b]; t++) {
        const at = left ? T - lengths[b] + t : t;
        ids[b * T + at] = 1 + ((b * 7 + t * 13) % (V - 1));
        mask[b * T + at] = 1;
      }
    }
    const all = await m.forward(ids, [B, T], { attentionMask: mask });
    for (const b of [0, 1, 8, 10]) {
      const one = await m.forward(ids.subarray(b * T, (b + 1) * T), [1, T], { attentionMask: mask.subarray(b * T, (b + 1) * T) });
      let worst = 0;
      for (let t = 0; t < T; t++) {
        if (!mask[b * T + t]) continue;
        for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(all.logits[(b * T + t) * V + v] - one.logits[t * V + v]));
      }
      expect(worst, `sequence ${b}`).toBeLessThan(1e-5);
    }
    m.dispose();
  });
});
