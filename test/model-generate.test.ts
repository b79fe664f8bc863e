// Generation with a key/value cache, sequence log-probs, concurrency and memory.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Model } from '../lib/index.js';

const gpt2Dir = path.join(__dirname, 'golden', 'models', 'gpt2-tiny');
const neoxDir = path.join(__dirname, 'golden', 'models', 'pythia-tiny-bf16');
const prompts = [Int32Array.from([5, 17, 3]), Int32Array.from([40]), Int32Array.from([8, 9, 10, 11, 12])];

describe('generate', () => {
  for (const dir of [gpt2Dir, neoxDir]) {
    const name = path.basename(dir);
    it(`${name}: greedy with the cache equals greedy re-running the whole sequence`, async () => {
      const m = await Model.load(dir);
      const a = await m.generate(prompts, { maxNewTokens: 8, temperature: 0 });
      const b = await m.generate(prompts, { maxNewTokens: 8, temperature: 0, useCache: false });
      expect(a).toEqual(b);
      expect(a.map((r) => r.length)).toEqual([8, 8, 8]);
    });

    it(`${name}: a batch of different lengths equals each prompt alone`, async () => {
      const m = await Model.load(dir);
      const batched = await m.generate(prompts, { maxNewTokens: 6, temperature: 0 });
      for (let i = 0; i < prompts.length; i++) {
        expect(batched[i]).toEqual((await m.generate([prompts[i]], { maxNewTokens: 6, temperature: 0 }))[0]);
      }
    });

    it(`${name}: greedy follows the forward pass's argmax`, async () => {
      const m = await Model.load(dir);
      const p = prompts[2];
      const [out] = await m.generate([p], { maxNewTokens: 3, temperature: 0 });
      let seq = Array.from(p);
      for (const tok of out) {
        const { logits, shape } = await m.forward(Int32Array.from(seq), [1, seq.length]);
        const V = shape[2];
        const last = logits.subarray((seq.length - 1) * V, seq.length * V);
        expect(tok).toBe(last.indexOf(Math.max(...last)));
        seq = [...seq, tok];
      }
    });
  }

  it('is reproducible in its seed, and sampling depends on it', async () => {
    const m = await Model.load(gpt2Dir);
    const opts = { maxNewTokens: 10, temperature: 1.5, seed: 11 };
    expect(await m.generate(prompts, opts)).toEqual(await m.generate(prompts, opts));
    expect(await m.generate(prompts, opts)).not.toEqual(await m.generate(prompts, { ...opts, seed: 12 }));
  });

  it('topK = 1 is greedy, and topP keeps at least the best token', async () => {
    const m = await Model.load(gpt2Dir);
    const greedy = await m.generate(prompts, { maxNewTokens: 6, temperature: 0 });
    expect(await m.generate(prompts, { maxNewTokens: 6, temperature: 1, topK: 1, seed: 3 })).toEqual(greedy);
    expect(await m.generate(prompts, { maxNewTokens: 6, temperature: 1, topP: 1e-6, seed: 3 })).toEqual(greedy);
  });

  it('stops each row at its EOS', async () => {
    const m = await Model.load(gpt2Dir);
    const greedy = await m.generate(prompts, { maxNewTokens: 6, temperature: 0 });
    const eos = greedy[0][2];
    const out = await m.generate(prompts, { maxNewTokens: 6, temperature: 0, eosTokenId: eos });
    expect(out[0]).toEqual(greedy[0].slice(0, greedy[0].indexOf(eos) + 1));
    for (const row of out) expect(row.indexOf(eos) === -1 || row.indexOf(eos) === row.length - 1).toBe(true);
  });

  it('stops at any of a list of ids (transformers\' eos_token_id lists); a bad list is a coded error', async () => {
    const m = await Model.load(gpt2Dir);
    const greedy = await m.generate(prompts, { maxNewTokens: 6, temperature: 0 });
    const stops = [greedy[0][3], greedy[2][1]];
    const out = await m.generate(prompts, { maxNewTokens: 6, temperature: 0, eosTokenId: stops });
    for (let i = 0; i < prompts.length; i++) {
      const cut = greedy[i].findIndex((t) => stops.includes(t));
      expect(out[i]).toEqual(cut < 0 ? greedy[i] : greedy[i].slice(0, cut + 1));
    }
    expect(await m.generate(prompts, { maxNewTokens: 6, temperature: 0, eosTokenId: [] })).toEqual(greedy);
    await expect(m.generate(prompts, { maxNewTokens: 2, eosTokenId: [1, -2] })).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION', message: expect.stringContaining('eosTokenId[1]') });
  });

  it('rejects bad prompts and options', async () => {
    const m = await Model.load(gpt2Dir);
    await expect(m.generate([], {})).rejects.toMatchObject({ code: 'ERR_TDPO_TYPE' });
    await expect(m.generate([new Int32Array(0)], {})).rejects.toMatchObject({ code: 'ERR_TDPO_INPUT' });
    await expect(m.generate([Int32Array.from([97])], {})).rejects.toMatchObject({ code: 'ERR_TDPO_INPUT' });
    await expect(m.generate([Int32Array.from([1])], { maxNewTokens: 16 })).rejects.toMatchObject({ code: 'ERR_TDPO_INPUT' });
    await expect(m.generate([Int32Array.from([1])], { temperature: -1 })).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION' });
    await expect(m.generate([Int32Array.from([1])], { topP: 0 })).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION' });
  });
});

describe('sequenceLogprobs', () => {
  it('equals log-softmax of the forward logits at the labels, -100 ignored', async () => {
    const m = await Model.load(neoxDir);
    const B = 2;
    const T = 5;
    const ids = Int32Array.from([1, 2, 3, 4, 5, 9, 8, 7, 6, 5]);
    const labels = Int32Array.from([-100, 3, 4, 5, 6, -100, -100, 6, 5, 4]);
    const { tokenLogprobs, sums } = await m.sequenceLogprobs(ids, [B, T], labels);
    const { logits, shape } = await m.forward(ids, [B, T]);
    const V = shape[2];
    for (let b = 0; b < B; b++) {
      let sum = 0;
      for (let t = 0; t < T; t++) {
        const i = b * T + t;
        if (labels[i] === -100) {
          expect(tokenLogprobs[i]).toBe(0);
          continue;
        }
        const row = logits.subarray(i * V, (i + 1) * V);
        const max = Math.max(...row);
        const lse = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
        expect(tokenLogprobs[i]).toBeCloseTo(row[labels[i]] - lse, 4);
        sum += row[labels[i]] - lse;
      }
      expect(sums[b]).toBeCloseTo(sum, 4);
    }
    await expect(m.sequenceLogprobs(ids, [B, T], Int32Array.from([101, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).rejects.toMatchObject({ code: 'ERR_TDPO_LABEL' });
  });
});

describe('concurrency and memory', () => {
  it('two concurrent calls on one model give the results of two sequential ones', async () => {
    const m = await Model.load(gpt2Dir);
    const ids = Int32Array.from([1, 2, 3, 4, 5, 6]);
    const [a, b, g] = await Promise.all([m.forward(ids, [2, 3]), m.forward(ids, [1, 6]), m.generate(prompts, { temperature: 0, maxNewTokens: 4 })]);
    expect(a.logits).toEqual((await m.forward(ids, [2, 3])).logits);
    expect(b.logits).toEqual((await m.forward(ids, [1, 6])).logits);
    expect(g).toEqual(await m.generate(prompts, { temperature: 0, maxNewTokens: 4 }));
  });

  it('a thousand forward calls do not grow memory', () => {
    const script = `
      const { Model } = require('tdpo');
      (async () => {
        const m = await Model.load(${JSON.stringify(gpt2Dir)});
        const ids = new Int32Array(4 * 16).fill(3);
        const rss = [];
        for (let i = 0; i < 1000; i++) {
          await m.forward(ids, [4, 16]);
          if (i % 250 === 249) { gc(); await new Promise((r) => setTimeout(r, 5)); rss.push(process.memoryUsage().rss); }
        }
        console.log(JSON.stringify(rss));
      })();`;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { cwd: path.resolve(__dirname, '..'), encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const rss = JSON.parse(r.stdout) as number[];
    // Each call returns 4 x 16 x 97 floats (25 KB): 1000 leaked calls would add 25 MB.
    expect(rss[3] - rss[0]).toBeLessThan(8 << 20);
  });
});
