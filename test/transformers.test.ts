// Folders that tdpo saves, loaded by Hugging Face transformers itself (AutoModelForCausalLM), give
// the logits tdpo computes. Needs a Python with torch and transformers: the one npm test makes in
// .venv-interop/ (scripts/interop-python.js; CI fails without it), or TDPO_PYTHON; skipped where
// there is none (a bare vitest run without that set-up).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Model } from '../lib/index.js';
import { dirOf, golden, llamaGolden, logitError } from './model-fixtures.js';

// npm test makes .venv-interop/ (scripts/interop-python.js); TDPO_PYTHON names another Python.
const venvPython = path.join(__dirname, '..', '.venv-interop', 'bin', 'python');
const python = process.env.TDPO_PYTHON ?? (existsSync(venvPython) ? venvPython : 'python3');
const hasTransformers = spawnSync(python, ['-c', 'import torch, transformers'], { stdio: 'ignore' }).status === 0;
const tmp = mkdtempSync(path.join(tmpdir(), 'tdpo-hf-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface Request {
  dir: string;
  inputIds: number[];
  shape: [number, number];
  attentionMask?: number[];
}

function transformersLogits(requests: Request[]): { transformers: string; logits: number[] }[] {
  const out = path.join(tmp, `logits-${requests.length}-${Date.now()}.json`);
  const r = spawnSync(python, [path.join(__dirname, 'transformers_logits.py'), out], {
    input: JSON.stringify(requests),
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`transformers_logits.py failed (${r.status}):\n${r.stderr}`);
  return JSON.parse(readFileSync(out, 'utf8'));
}

// Under CI the interop Python must be there (npm test makes it): a skip would hide a broken one.
it.runIf(!!process.env.CI && process.env.CI !== 'false')('CI has the interop Python', () => {
  expect(hasTransformers, `${python} cannot import torch and transformers`).toBe(true);
});

describe.skipIf(!hasTransformers)('transformers loads what tdpo saves', () => {
  it('the golden checkpoints, saved by tdpo: same logits, with and without padding', async () => {
    const requests: Request[] = [];
    const ours: { logits: Float32Array; V: number; mask?: Int32Array }[] = [];
    for (const c of [...golden.cases, ...llamaGolden.cases]) {
      const m = await Model.load(dirOf(c.name));
      const dir = path.join(tmp, c.name);
      await m.save(dir);
      const ids = Int32Array.from(c.inputIds);
      const mask = Int32Array.from(c.attentionMask);
      const plain = await m.forward(ids, c.shape);
      const masked = await m.forward(ids, c.shape, { attentionMask: mask });
      requests.push({ dir, inputIds: c.inputIds, shape: c.shape }, { dir, inputIds: c.inputIds, shape: c.shape, attentionMask: c.attentionMask });
      ours.push({ logits: plain.logits, V: plain.shape[2] }, { logits: masked.logits, V: masked.shape[2], mask });
      m.dispose();
    }
    const theirs = transformersLogits(requests);
    console.log(`transformers ${theirs[0].transformers}`);
    theirs.forEach((t, i) => {
      const { logits, V, mask } = ours[i];
      expect(t.logits.length).toBe(logits.length);
      expect(logitError(t.logits, logits, V, mask ? (pos) => mask[pos] === 1 : undefined), requests[i].dir).toBeLessThan(1e-4);
    });
  });

  it("minimal configs (no rotary, activation, norm or key/value-head fields) mean the same model to both: transformers' defaults", async () => {
    const neox = { model_type: 'gpt_neox', vocab_size: 64, max_position_embeddings: 32, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 96 };
    const gpt2 = { model_type: 'gpt2', vocab_size: 64, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4 };
    const requests: Request[] = [];
    const ours: { logits: Float32Array; V: number }[] = [];
    const ids = Array.from({ length: 2 * 9 }, (_, i) => (i * 7 + 3) % 64);
    const llama = { model_type: 'llama', vocab_size: 64, max_position_embeddings: 32, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64 };
    const qwen2 = { model_type: 'qwen2', vocab_size: 64, max_position_embeddings: 32, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64 };
    // Mistral's num_key_value_heads defaults to 8: 8 heads here.
    const mistral = { model_type: 'mistral', vocab_size: 64, max_position_embeddings: 32, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 8, intermediate_size: 64 };
    for (const [name, config] of [['neox-minimal', neox], ['gpt2-minimal', gpt2], ['llama-minimal', llama], ['qwen2-minimal', qwen2], ['mistral-minimal', mistral]] as const) {
      const m = await Model.create(config, { seed: 5 });
      const dir = path.join(tmp, name);
      await m.save(dir);
      expect(JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'))).toEqual(config);
      const out = await m.forward(Int32Array.from(ids), [2, 9]);
      requests.push({ dir, inputIds: ids, shape: [2, 9] });
      ours.push({ logits: out.logits, V: out.shape[2] });
      m.dispose();
    }
    transformersLogits(requests).forEach((t, i) => {
      expect(logitError(t.logits, ours[i].logits, ours[i].V), requests[i].dir).toBeLessThan(1e-4);
    });
  });
});
