// Generation with a key/value cache, sequence log-probs, concurrency and memory.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
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

describe('sampling draws from the model\'s distribution', () => {
  // 20,000 rows of one prompt, one new token each: the counts against softmax(logits / temperature)
  // of the forward pass, restricted and renormalised as topK and topP say. Pearson's chi-square over
  // the tokens expected at least 5 times (the rest pooled); the seeds are fixed, so the statistic is
  // too. A sampler off by one token, or ignoring the temperature or a mask, lands far above the bound.
  const N = 20_000;
  const prompt = Int32Array.from([5, 17, 3]);
  const lastLogits = async (m: Model) => {
    const { logits, shape } = await m.forward(prompt, [1, prompt.length]);
    const V = shape[2];
    return Array.from(logits.subarray((prompt.length - 1) * V, prompt.length * V));
  };
  const expected = (z: number[], temperature: number, topK = 0, topP = 1) => {
    const scaled = z.map((x) => x / temperature);
    const order = scaled.map((_, i) => i).sort((a, b) => scaled[b] - scaled[a]);
    const max = scaled[order[0]];
    const e = scaled.map((x) => Math.exp(x - max));
    const sum = e.reduce((a, b) => a + b, 0);
    const keep = new Set<number>();
    let mass = 0;
    for (const [rank, i] of order.entries()) {
      if ((topK > 0 && rank >= topK) || (rank > 0 && mass >= topP)) break;
      keep.add(i);
      mass += e[i] / sum;
    }
    const kept = [...keep].reduce((a, i) => a + e[i], 0);
    return e.map((x, i) => (keep.has(i) ? x / kept : 0));
  };
  const chiSquare = (counts: number[], p: number[]) => {
    let stat = 0;
    let df = -1;
    let [poolObs, poolExp] = [0, 0];
    for (let i = 0; i < p.length; i++) {
      if (p[i] * N >= 5) {
        stat += (counts[i] - p[i] * N) ** 2 / (p[i] * N);
        df++;
      } else {
        poolObs += counts[i];
        poolExp += p[i] * N;
      }
    }
    if (poolExp > 0) {
      stat += (poolObs - poolExp) ** 2 / Math.max(poolExp, 1e-9);
      df++;
    }
    return { stat, df };
  };
  for (const [label, opts] of [
    ['temperature 1', { temperature: 1 }],
    ['temperature 2.5', { temperature: 2.5 }],
    ['topK 5', { temperature: 1, topK: 5 }],
    ['topP 0.5', { temperature: 1, topP: 0.5 }],
  ] as const) {
    it(label, async () => {
      const m = await Model.load(gpt2Dir);
      const p = expected(await lastLogits(m), opts.temperature, 'topK' in opts ? opts.topK : 0, 'topP' in opts ? opts.topP : 1);
      const out = await m.generate(Array.from({ length: N }, () => prompt), { ...opts, maxNewTokens: 1, seed: 21 });
      const counts = p.map(() => 0);
      for (const row of out) counts[row[0]]++;
      // Tokens outside the kept set are never drawn.
      for (let i = 0; i < p.length; i++) if (p[i] === 0) expect(counts[i], `token ${i}`).toBe(0);
      const { stat, df } = chiSquare(counts, p);
      expect(df).toBeGreaterThanOrEqual(label.startsWith('topK') ? 3 : 1);
      // Chi-square's mean is df and its sd √(2 df). df + 6 sd leaves a tail of 3e-4 at df 4 and
      // under 1e-6 at df 90; the seed is fixed, so a correct sampler passes every run.
      expect(stat, `chi-square ${stat.toFixed(1)} on ${df} df`).toBeLessThan(df + 6 * Math.sqrt(2 * df));
      m.dispose();
    });
  }
  it('draws the same tokens whatever the thread count', () => {
    // Each count in its own process, set before any work: a worker thread keeps the OpenMP count it
    // first ran with, so changing it mid-process would not reach the sampler's parallel loop.
    const lib = JSON.stringify(path.join(__dirname, '..', 'dist', 'cjs', 'index.js'));
    const run = (threads: number) => {
      const script = `
        const t = require(${lib});
        t.setNumThreads(${threads});
        (async () => {
          const m = await t.Model.load(${JSON.stringify(gpt2Dir)});
          const rows = Array.from({ length: 256 }, (_, i) => Int32Array.from([1 + (i % 90), 7, 3]));
          const out = await m.generate(rows, { temperature: 1, maxNewTokens: 6, seed: 5 });
          console.log(JSON.stringify({ threads: t.getNumThreads(), out: out.map((r) => Array.from(r)) }));
        })();`;
      const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { threads: number; out: number[][] };
    };
    const [one, two] = [run(1), run(2)];
    expect([one.threads, two.threads]).toEqual([1, 2]);
    expect(two.out).toEqual(one.out);
  });
  it('a tiny temperature is greedy, not an overflow', async () => {
    const m = await Model.load(gpt2Dir);
    const greedy = await m.generate(prompts, { maxNewTokens: 6, temperature: 0 });
    expect(await m.generate(prompts, { maxNewTokens: 6, temperature: 1e-40, seed: 3 })).toEqual(greedy);
    m.dispose();
  });
  it('logits that are not finite are a coded error, not a token', async () => {
    // Finite weights of 3e38 load (a NaN weight would be refused), but the activations overflow:
    // every next-token logit is NaN, as after a diverged training run.
    const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-nan-'));
    try {
      const m = await Model.create({ model_type: 'gpt2', vocab_size: 40, n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2 }, { seed: 1 });
      await m.save(dir);
      m.dispose();
      const file = path.join(dir, 'model.safetensors');
      const bytes = readFileSync(file);
      const headerEnd = 8 + Number(bytes.readBigUInt64LE(0));
      for (let o = headerEnd; o + 4 <= bytes.length; o += 4) bytes.writeFloatLE(3e38, o);
      writeFileSync(file, bytes);
      const broken = await Model.load(dir);
      for (const opts of [{ temperature: 1 }, { temperature: 1, topK: 5 }]) {
        await expect(broken.generate([prompt], { ...opts, maxNewTokens: 2, seed: 1 })).rejects.toMatchObject({ code: 'ERR_TDPO_LOGITS', message: expect.stringContaining('not finite') });
      }
      broken.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('sequenceLogprobs', () => {
  it('equals log-softmax of the forward logits at the labels, and their entropy, -100 ignored', async () => {
    const m = await Model.load(neoxDir);
    const B = 2;
    const T = 5;
    const ids = Int32Array.from([1, 2, 3, 4, 5, 9, 8, 7, 6, 5]);
    const labels = Int32Array.from([-100, 3, 4, 5, 6, -100, -100, 6, 5, 4]);
    const { tokenLogprobs, sums, tokenEntropies } = await m.sequenceLogprobs(ids, [B, T], labels);
    const { logits, shape } = await m.forward(ids, [B, T]);
    const V = shape[2];
    for (let b = 0; b < B; b++) {
      let sum = 0;
      for (let t = 0; t < T; t++) {
        const i = b * T + t;
        if (labels[i] === -100) {
          expect(tokenLogprobs[i]).toBe(0);
          expect(tokenEntropies[i]).toBe(0);
          continue;
        }
        const row = logits.subarray(i * V, (i + 1) * V);
        const max = Math.max(...row);
        const lse = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
        expect(tokenLogprobs[i]).toBeCloseTo(row[labels[i]] - lse, 4);
        const entropy = -row.reduce((a, x) => a + Math.exp(x - lse) * (x - lse), 0);
        expect(entropy).toBeGreaterThan(0.1);
        expect(tokenEntropies[i]).toBeCloseTo(entropy, 4);
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
