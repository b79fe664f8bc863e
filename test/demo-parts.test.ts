// The demo's building blocks: the WordNet corpus, the narrowed GPT-2 vocabulary, the reward, the
// pair selection, the statistics behind the verdicts, and the charts.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { accuracySpec, chartSpecs, frontierSpec, renderSvg } from '../lib/demo/charts.js';
import { buildCorpus, defaultCorpusOptions, encodable, wordnetExamples } from '../lib/demo/corpus.js';
import { sampleStats, type EvalPoint } from '../lib/demo/experiment.js';
import { aboveChance, binomialSe, meanWithSe, pairedDifference } from '../lib/demo/stats.js';
import { machineLine } from '../lib/demo/machine.js';
import { bestWorstPair, gapLine, pairStats, pooledPairStats, samplePairs, type Scored } from '../lib/demo/pairs.js';
import { checkPrompts, demoHelp, fullSettings, overridden, quickSettings, seedList, tunable, withOverrides } from '../lib/cli/demo.js';
import { continuationText, prepareStages, writeStageFile, type DemoSettings } from '../lib/demo/stages.js';
import { summarise, table } from '../lib/demo/summary.js';
import { DPO, frontierChecks, reverseKl, reverseKlFrontier, TDPO2, verdictLines, verdicts } from '../lib/demo/verdicts.js';
import { sentimentScore } from '../lib/demo/reward.js';
import { NarrowVocab } from '../lib/demo/vocab.js';
import { Model, Tokenizer, TrainStep } from '../lib/index.js';

describe('demo corpus', () => {
  const corpus = buildCorpus();
  it('has tens of thousands of real, clean sentences', () => {
    expect(wordnetExamples().length).toBeGreaterThan(40000);
    expect(corpus.train.length).toBeGreaterThan(25000);
    expect(corpus.heldOut.length).toBeGreaterThan(2500);
    for (const s of [...corpus.train.slice(0, 500), ...corpus.heldOut.slice(0, 500)]) {
      expect(s).not.toMatch(/"|--|\s\s|^\s|\s$/);
      const words = s.split(' ').length;
      expect(words).toBeGreaterThanOrEqual(4);
      expect(words).toBeLessThanOrEqual(20);
    }
    expect([...corpus.train, ...corpus.heldOut]).toContain('we were at last able to buy a car');
  });
  it('splits deterministically, without overlap, each sentence by its own hash', () => {
    const again = buildCorpus();
    expect(again.heldOut.slice(0, 20)).toEqual(corpus.heldOut.slice(0, 20));
    const train = new Set(corpus.train);
    expect(corpus.heldOut.some((s) => train.has(s))).toBe(false);
    // Dropping sentences from the source moves none of the rest across the split.
    const fewer = buildCorpus({ ...defaultCorpusOptions, maxWords: 12 });
    const heldOut = new Set(corpus.heldOut);
    expect(fewer.train.some((s) => heldOut.has(s))).toBe(false);
  });

  it('narrows GPT-2 to the corpus tokens and round-trips every sentence', () => {
    const vocab = NarrowVocab.fromTexts([...corpus.train, ...corpus.heldOut]);
    expect(vocab.size).toBeGreaterThan(5000);
    expect(vocab.size).toBeLessThan(30000);
    const gpt2 = Tokenizer.gpt2();
    for (const s of corpus.heldOut.slice(0, 300)) {
      const ids = vocab.encode(s)!;
      expect(ids.length).toBe(gpt2.encode(s).length);
      expect(vocab.decode(ids)).toBe(s);
    }
    expect(vocab.encode('zyxwvut qqq')).toBeUndefined();
    expect(vocab.decode([vocab.eosId])).toBe('<|endoftext|>');
    const restored = NarrowVocab.fromGpt2Ids(vocab.gpt2Ids);
    expect(restored.encode(corpus.train[0])).toEqual(vocab.encode(corpus.train[0]));
  });

  it('keeps the most frequent tokens when asked, and the corpus to the sentences they encode', () => {
    const texts = [...corpus.train, ...corpus.heldOut];
    const small = NarrowVocab.fromTexts(texts, undefined, 8192);
    expect(small.size).toBe(8193);
    expect(small.encode('the man was very happy')).toBeDefined();
    const kept = encodable(corpus, small);
    expect(kept.train.length / corpus.train.length).toBeGreaterThan(0.4);
    expect(kept.train.length).toBeLessThan(corpus.train.length);
    expect(kept.train.every((t) => small.encode(t))).toBe(true);
    expect(kept.heldOut).toEqual(corpus.heldOut.filter((t) => small.encode(t)));
  });

  it('refuses settings that ask for more pair prompts than the held-out sentences give', async () => {
    const small = NarrowVocab.fromTexts([...corpus.train, ...corpus.heldOut], undefined, 8192);
    const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-pairs-'));
    // Refused before πref is needed (there is none at this path).
    await expect(samplePairs(dir, path.join(dir, 'no-model'), encodable(corpus, small), small, { ...fullSettings, pairPrompts: 5000 }, 1)).rejects.toMatchObject({
      code: 'ERR_TDPO_DEMO_PAIRS',
      message: expect.stringMatching(/give \d+ pair prompts after the 256 evaluation prompts, not 5000/),
    });
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads a fixed-length continuation across sentence ends', () => {
    const vocab = NarrowVocab.fromTexts(['a good day', 'the end']);
    const [good, end] = [vocab.encode(' good day')!, vocab.encode('the end')!];
    const ids = [...good, vocab.eosId, ...end, vocab.eosId];
    expect(continuationText(ids, vocab)).toEqual({ ids, text: 'good day the end' });
  });
});

describe('demo reward', () => {
  it('scores positive text above neutral above negative', () => {
    expect(sentimentScore('a wonderful, happy and beautiful day')).toBeGreaterThan(0);
    expect(sentimentScore('the table is made of wood')).toBe(0);
    expect(sentimentScore('a terrible, sad and painful loss')).toBeLessThan(0);
  });
  it('is bounded, so that more of the same words buy less and less reward', () => {
    const scores = [1, 2, 4, 8].map((k) => sentimentScore(Array.from({ length: k }, () => 'good').join(' ')));
    for (const x of scores) expect(Math.abs(x)).toBeLessThanOrEqual(1);
    for (let i = 1; i < scores.length; i++) expect(scores[i] - scores[i - 1]).toBeLessThan(i === 1 ? Infinity : scores[i - 1] - scores[i - 2]);
    expect(sentimentScore('a terrible terrible awful horrible day')).toBeGreaterThanOrEqual(-1);
  });
  it('reads a negation, which a word-by-word sum cannot', () => {
    expect(sentimentScore('the food was good')).toBeGreaterThan(0);
    expect(sentimentScore('the food was not good')).toBeLessThan(0);
  });
});

describe('demo pairs: best of n against worst of n', () => {
  const s = (reward: number, n = 3): Scored => ({ ids: Array.from({ length: n }, (_, i) => i + 1), reward });
  it('pairs the most positive sample with the most negative, first ones on ties', () => {
    const samples = [s(1), s(-2), s(3), s(0), s(3), s(-2)];
    const c = bestWorstPair(samples, 3);
    expect('chosen' in c && c.chosen === samples[2] && c.rejected === samples[1] && c.gap === 5).toBe(true);
  });
  it('drops a pair whose gap is under the threshold, and every all-tied prompt', () => {
    expect(bestWorstPair([s(1), s(-1), s(0)], 3)).toEqual({ drop: 'small gap', gap: 2 });
    expect(bestWorstPair([s(1), s(-2)], 3)).toMatchObject({ gap: 3, chosen: { reward: 1 } });
    expect(bestWorstPair([s(2), s(2)], 0)).toEqual({ drop: 'small gap', gap: 0 });
  });
  it('leaves empty samples out, and needs two that are not', () => {
    expect(bestWorstPair([s(0, 0), s(5, 0), s(1)], 0)).toEqual({ drop: 'empty' });
    const c = bestWorstPair([s(9, 0), s(1), s(-3), s(-9, 0)], 2);
    expect('chosen' in c && c.chosen.reward === 1 && c.rejected.reward === -3).toBe(true);
  });
  it('tallies kept and dropped prompts, the gap distribution and the kept pairs means', () => {
    const choices = [[s(3, 4), s(-1, 2)], [s(1), s(0)], [s(2, 0)], [s(0, 6), s(-4, 2)]].map((x) => bestWorstPair(x, 3));
    const st = pairStats(choices, 2, 3);
    expect(st).toMatchObject({ prompts: 4, pairs: 2, empty: 1, smallGap: 1, minGap: 3, samplesPerPrompt: 2 });
    expect(st.gapBins).toEqual([{ from: 1, kept: 0, dropped: 1 }, { from: 4, kept: 2, dropped: 0 }]);
    expect(st).toMatchObject({ chosenReward: 1.5, rejectedReward: -2.5 });
    expect(gapLine(st)).toBe('1.0–1.1: 1 (dropped), 4.0–4.1: 2');
  });
  it('bins gaps of VADER scores by 0.1 exactly, a bin split by the threshold counting both sides', () => {
    // 0.3 = 0.7 − 0.4 in floating point is 0.29999999999999993: it belongs to the 0.3 bin.
    const choices = [[0.7, 0.4], [0.31, 0], [0.59, 0], [0.55, 0], [0.9, -0.9]].map(([a, b]) => bestWorstPair([s(a), s(b)], 0.58));
    const st = pairStats(choices, 2, 0.58);
    expect(st.gapBins).toEqual([
      { from: 0.3, kept: 0, dropped: 2 },
      { from: 0.5, kept: 1, dropped: 1 },
      { from: 1.8, kept: 1, dropped: 0 },
    ]);
    expect(gapLine(st)).toBe('0.3–0.4: 2 (dropped), 0.5–0.6: 2 (1 dropped), 1.8–1.9: 1');
  });
  it('pools seeds draws as one: counts and bins summed, the kept pairs means weighted by their counts', () => {
    const a = pairStats([[s(3, 4), s(-1, 2)], [s(1), s(0)], [s(2, 0)]].map((x) => bestWorstPair(x, 3)), 2, 3);
    const b = pairStats([[s(0, 6), s(-4, 2)], [s(5), s(-5)], [s(2), s(-2)]].map((x) => bestWorstPair(x, 3)), 2, 3);
    const all = pairStats([[s(3, 4), s(-1, 2)], [s(1), s(0)], [s(2, 0)], [s(0, 6), s(-4, 2)], [s(5), s(-5)], [s(2), s(-2)]].map((x) => bestWorstPair(x, 3)), 2, 3);
    expect(pooledPairStats([a, b])).toEqual({ ...all, chosenReward: expect.closeTo(all.chosenReward, 12), rejectedReward: expect.closeTo(all.rejectedReward, 12) });
    expect(all).toMatchObject({ prompts: 6, pairs: 4, empty: 1, smallGap: 1, chosenReward: 2.5, rejectedReward: -3 });
  });
});

const point = (method: string, seed: number, step: number, p: Partial<EvalPoint> = {}): EvalPoint => ({
  method, seed, step, reward: 0, rewardSe: 0, sampleKl: 0, sampleReverseKl: 0, sampleReverseKlSe: 0, entropy: 5, accuracy: 0, rewardMargin: 0, klChosen: 0, klRejected: 0, klMargin: 0, ...p,
});

describe('demo statistics and verdicts', () => {
  it('computes the binomial standard error and the two-SE rule', () => {
    expect(binomialSe(0.5, 100)).toBeCloseTo(0.05, 12);
    expect(binomialSe(0.7, 128)).toBeCloseTo(Math.sqrt(0.21 / 128), 12);
    expect(binomialSe(1, 50)).toBe(0);
    expect(binomialSe(0.5, 0)).toBe(0);
    expect(aboveChance(0.6, 100)).toBe(true); // 0.1 > 2 * 0.049
    expect(aboveChance(0.59, 100)).toBe(false); // 0.09 < 2 * 0.0492
    expect(aboveChance(0.4, 1000)).toBe(false);
  });
  it('states each verdict on the means, and counts the seeds where it holds alone', () => {
    const methods = [DPO, TDPO2];
    const pts = [1, 2].flatMap((seed) => [
      point(DPO, seed, 0), point(TDPO2, seed, 0),
      point(DPO, seed, 10, { sampleKl: 5, reward: 1, klMargin: 1, accuracy: 0.8 }),
      // seed 2's TDPO2 has a larger margin than its DPO, and no point that dominates DPO's
      point(TDPO2, seed, 10, seed === 1 ? { sampleKl: 1, reward: 2, klMargin: 0.1, accuracy: 0.7 } : { sampleKl: 6, reward: 0.5, klMargin: 1.2, accuracy: 0.55 }),
    ]);
    const [margin, frontier, acc] = verdicts(pts, [1, 2], methods, 100);
    expect(margin).toMatchObject({ answer: 'yes', seedsHolding: 1, seeds: 2 }); // mean 0.65 < 1
    // Pooled over seeds, seed 1's TDPO2 point dominates both DPO points; within seed 2 nothing does.
    expect(frontier).toMatchObject({ answer: 'yes', seedsHolding: 1 });
    expect(frontier.detail).toMatch(/^2 of 2 trained DPO evaluation points .* within each seed alone it holds in 1 of 2$/);
    expect(acc).toMatchObject({ answer: 'yes', seedsHolding: 1 }); // TDPO2: mean 0.625 clears, seed 2's 0.55 does not
    expect(acc.detail).toContain(`lowest: ${TDPO2}, 0.625 ± 0.048, one seed's binomial error on 100 pairs`);
    // Point by point: seed 1's DPO point is dominated by its TDPO2 step 10; in seed 2 the only
    // TDPO2 point with no more KL is πref (reward 0 < 1).
    const checks = frontierChecks(pts, [1, 2]);
    expect(checks.map((c) => [c.seed, c.dpo.step, c.best?.step, c.dominated])).toEqual([[1, 10, 10, true], [2, 10, 0, false]]);
    expect(checks.every((c) => c.paired === undefined)).toBe(true); // these points carry no samples
    expect(verdictLines([margin])[0]).toMatch(/^- \*\*TDPO2 keeps a smaller KL margin than DPO:\*\* yes — 0.650 against 1.000/);
  });
});

describe('the seed-by-seed frontier table', () => {
  it('agrees with the verdict: a seed holds exactly when every one of its rows is dominated', () => {
    let x = 12345; // a fixed linear congruential stream: the same cases every run
    const rand = () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
    for (let trial = 0; trial < 200; trial++) {
      const seeds = [1, 2, 3];
      // Rewards and KLs on a coarse grid, so ties (which count as dominated) happen.
      const pts = seeds.flatMap((seed) => [DPO, TDPO2].flatMap((m) => [0, 10, 20].map((step) =>
        point(m, seed, step, step === 0 ? {} : { sampleKl: Math.floor(rand() * 4) / 4, reward: Math.floor(rand() * 4) / 4 }))));
      const perSeed = seeds.filter((seed) => frontierChecks(pts, seeds).filter((c) => c.seed === seed).every((c) => c.dominated)).length;
      const [, frontier] = verdicts(pts, seeds, [DPO, TDPO2], 100);
      expect(perSeed).toBe(frontier.seedsHolding);
    }
  });
});

describe('the secondary analysis: the frontier on the reverse KL', () => {
  it('applies the same rule on sampleReverseKl, and leaves the verdicts on sampleKl', () => {
    // Seed 1: TDPO2's step-10 point has more reward than DPO's, with less reverse KL but more
    // forward KL. Seed 2: the other way round.
    const pts = [1, 2].flatMap((seed) => [
      point(DPO, seed, 0), point(TDPO2, seed, 0),
      point(DPO, seed, 10, { sampleKl: 2, sampleReverseKl: 2, reward: 0.5 }),
      point(TDPO2, seed, 10, seed === 1 ? { sampleKl: 3, sampleReverseKl: 1, reward: 0.6 } : { sampleKl: 1, sampleReverseKl: 3, reward: 0.6 }),
    ]);
    const [, frontier] = verdicts(pts, [1, 2], [DPO, TDPO2], 100);
    const reverse = reverseKlFrontier(pts, [1, 2]);
    // Pooled, each seed's DPO point is dominated by the other seed's TDPO2 point, on either axis.
    expect(frontier).toMatchObject({ answer: 'yes', seedsHolding: 1 });
    expect(reverse).toMatchObject({ answer: 'yes', seedsHolding: 1 });
    expect(frontierChecks(pts, [1, 2]).map((c) => c.dominated)).toEqual([false, true]);
    expect(frontierChecks(pts, [1, 2], reverseKl).map((c) => c.dominated)).toEqual([true, false]);
    expect(reverse.claim).toContain('reverse KL(πθ ‖ πref)');
    expect(reverse.detail).toMatch(/^2 of 2 trained DPO evaluation points \(all seeds\) have a TDPO2 α=0.5 point with no more reverse KL and at least as much reward; within each seed alone it holds in 1 of 2$/);
    expect(frontier.detail).toContain('no more sample KL');
  });
});

describe('the seed-by-seed frontier table, paired', () => {
  it("gives each row the best TDPO2 point's reward minus DPO's, sample by sample", () => {
    const pts = [
      point(DPO, 1, 0, { sampleRewards: [0, 0, 0, 0] }),
      point(TDPO2, 1, 0, { sampleRewards: [0, 0, 0, 0] }),
      point(DPO, 1, 10, { sampleKl: 2, reward: 0.5, sampleRewards: [1, 0, 1, 0] }),
      point(TDPO2, 1, 10, { sampleKl: 1, reward: 0.25, sampleRewards: [1, 0, 0, 0] }),
    ];
    const [c] = frontierChecks(pts, [1]);
    expect(c).toMatchObject({ dominated: false, best: { step: 10 } });
    // Differences 0, 0, −1, 0: mean −0.25, sample variance 0.25, SE 0.25.
    expect(c.paired?.diff).toBe(-0.25);
    expect(c.paired?.se).toBeCloseTo(0.25, 12);
  });
});

describe('demo report parts', () => {
  const pts = [1, 2].flatMap((seed) =>
    ['DPO', 'TDPO1'].flatMap((m) => [0, 5, 10].map((step) => point(m, seed, step, { sampleKl: step * seed, sampleReverseKl: step * seed / 2, reward: step / 10, rewardSe: 0.03 * seed, accuracy: step ? 0.6 + seed / 10 : 0 }))),
  );
  it('plots every evaluation point of every seed, with one πref marker per seed', () => {
    const spec = frontierSpec(pts, ['DPO', 'TDPO1']) as { data: { values: Array<{ group: string; seed: number }> }; encoding: Record<string, { scale: { domain: string[]; range: string[] } }> };
    const values = spec.data.values;
    expect(values.filter((v) => v.group === 'πref').map((v) => v.seed)).toEqual([1, 2]);
    expect(values.filter((v) => v.group !== 'πref')).toHaveLength(2 * 2 * 2); // methods x seeds x trained steps
    expect(spec.encoding.color.scale.domain).toEqual(['DPO', 'TDPO1', 'πref']);
    expect(spec.encoding.color.scale.range.at(-1)).toBe('black');
    expect(spec.encoding.shape.scale.range).toEqual(['circle', 'circle', 'diamond']);
    // The reverse-KL chart: the same points on the other axis.
    const kls = (sp: unknown) => (sp as { data: { values: Array<{ kl: number }> } }).data.values.map((v) => v.kl);
    expect(kls(frontierSpec(pts, ['DPO', 'TDPO1'], true))).toEqual(kls(spec).map((k) => k / 2));
    expect(Math.max(...kls(spec))).toBe(20);
  });
  it('charts accuracy from the first trained step, with SE bars', () => {
    const spec = accuracySpec(pts, ['DPO', 'TDPO1'], 100) as { data: { values: Array<{ step: number; accuracy: number; lo: number; hi: number }> } };
    expect(spec.data.values.every((v) => v.step > 0)).toBe(true);
    const v = spec.data.values[0];
    expect(v.accuracy).toBeCloseTo(0.75, 12); // mean of 0.7 and 0.8
    // The mean's error over two seeds' own 100 pairs: √(0.7·0.3/100 + 0.8·0.2/100)/2 = 0.0304, not
    // the binomial error of 0.75 on 100 pairs (0.0433).
    expect(v.hi - v.accuracy).toBeCloseTo(Math.hypot(binomialSe(0.7, 100), binomialSe(0.8, 100)) / 2, 12);
    expect(v.hi - v.accuracy).toBeCloseTo(0.0304, 4);
  });
  it('renders every chart to SVG and tables the means with SE', async () => {
    for (const [name, spec] of chartSpecs(pts, ['DPO', 'TDPO1'], 100)) expect((await renderSvg(spec)).startsWith('<svg'), name).toBe(true);
    const t = table(summarise(pts, 100));
    expect(t.split('\n')[0]).toBe('| method | reward ± SE | sample KL | reverse KL | entropy | pair acc. ± SE | reward margin | KL chosen | KL rejected | KL margin |');
    // The mean of two seeds' rewards, SEs 0.03 and 0.06: √(0.03² + 0.06²)/2 = 0.0335.
    expect(t).toContain('| DPO | 1.000 ± 0.034 | 15.000 | 7.500 | 5.000 | 0.750 ± 0.030 |');
  });
  it('names the machine and the libraries', () => {
    const line = machineLine();
    expect(line).toMatch(/\d+ cores, \d+ GiB; .+; node v\d+.*, libtorch \d+\.\d+/);
    expect(line).toMatch(/BLAS /);
  });
});

describe('demo evaluation statistics', () => {
  it('gives the mean reward with its standard error', () => {
    // Rewards 0, 2, 4: mean 2, sample variance 4, SE √(4/3).
    expect(meanWithSe([0, 2, 4]).reward).toBe(2);
    expect(meanWithSe([0, 2, 4]).rewardSe).toBeCloseTo(Math.sqrt(4 / 3), 12);
    expect(meanWithSe([3])).toEqual({ reward: 3, rewardSe: 0 });
  });
  it('gives a paired difference with the error of the differences, not of the two means', () => {
    // b − a = 1, 1, 4: mean 2, variance 3, SE 1; the two lists alone have SEs of about 1.7 and 2.9.
    const a = [0, 3, 1];
    const b = [1, 4, 5];
    expect(pairedDifference(a, b).diff).toBe(2);
    expect(pairedDifference(a, b).se).toBeCloseTo(1, 12);
    // Moving together: the same shift on every row is known exactly.
    expect(pairedDifference([0, 5, -3], [0.5, 5.5, -2.5])).toEqual({ diff: 0.5, se: 0 });
    expect(() => pairedDifference([1], [1, 2])).toThrow(RangeError);
    expect(() => pairedDifference([], [])).toThrow(RangeError);
  });
  it("takes the sample entropy, KL and log-ratios at the positions each continuation token was drawn from, from the train step's statistics", async () => {
    const config = { model_type: 'gpt2', vocab_size: 40, n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2 };
    const policy = await Model.create(config, { seed: 1 });
    const reference = await Model.create(config, { seed: 2 });
    // 6 rows: prompts of 2-3 tokens (one repeated, as the evaluation repeats each prompt), 4 tokens each.
    const prompts = [[0, 5], [0, 5], [0, 7, 8], [0, 9], [0, 7, 8], [0, 3]];
    const conts = prompts.map((_, i) => [1 + i, 2 + i, 3 + i, 4 + i]);
    // A few SFT steps on these rows make the policy peaked, so that every position has its own
    // entropy (a random model's are all near log 40) and a misplaced position shows.
    const T = 7;
    const inputIds = new Int32Array(6 * T);
    const labels = new Int32Array(6 * T).fill(-100);
    const attentionMask = new Int32Array(6 * T);
    prompts.forEach((p, i) => {
      [...p, ...conts[i]].forEach((x, t) => {
        inputIds[i * T + t] = x;
        attentionMask[i * T + t] = 1;
        if (t >= p.length) labels[i * T + t] = x;
      });
    });
    const sft = await TrainStep.create(policy, { loss: 'sft', optimizer: 'adamw' });
    for (let i = 0; i < 30; i++) {
      await sft.accumulate({ inputIds, labels, attentionMask, shape: [6, T] });
      await sft.apply(3e-2, 1);
    }
    const whole = await sampleStats(policy, reference, prompts, conts, 0);
    // At each position a continuation token was drawn from, each row run alone through both models
    // in JS (no padding, no batching): the policy's entropy, KL(πref ‖ πθ), and the drawn token's
    // log πθ − log πref, summed over the row.
    const logSoftmax = (z: number[]) => {
      const max = Math.max(...z);
      const lse = max + Math.log(z.reduce((a, x) => a + Math.exp(x - max), 0));
      return z.map((x) => x - lse);
    };
    let entropy = 0;
    let kl = 0;
    let count = 0;
    const logratios: number[] = [];
    for (let i = 0; i < prompts.length; i++) {
      const ids = Int32Array.from([...prompts[i], ...conts[i]]);
      const [{ logits: zp }, { logits: zq }] = [await policy.forward(ids, [1, ids.length]), await reference.forward(ids, [1, ids.length])];
      let ratio = 0;
      for (let t = prompts[i].length - 1; t < ids.length - 1; t++) {
        const lp = logSoftmax(Array.from(zp.subarray(t * 40, (t + 1) * 40)));
        const lq = logSoftmax(Array.from(zq.subarray(t * 40, (t + 1) * 40)));
        entropy -= lp.reduce((a, x) => a + Math.exp(x) * x, 0);
        kl += lq.reduce((a, x, v) => a + Math.exp(x) * (x - lp[v]), 0);
        ratio += lp[ids[t + 1]] - lq[ids[t + 1]];
        count++;
      }
      logratios.push(ratio);
    }
    expect(whole.entropy).toBeCloseTo(entropy / count, 5);
    expect(whole.entropy).toBeLessThan(Math.log(40) - 0.5);
    expect(whole.kl).toBeCloseTo(kl / prompts.length, 4);
    expect(whole.kl).toBeGreaterThan(0.1);
    // Row order: row i's log-ratio at index i, whichever side of its pair it went in as.
    expect(whole.logratios).toHaveLength(prompts.length);
    whole.logratios.forEach((x, i) => expect(x, `row ${i}`).toBeCloseTo(logratios[i], 4));
    expect(new Set(logratios.map((x) => x.toFixed(2))).size).toBe(prompts.length);
    policy.dispose();
    reference.dispose();
  });
});

describe('demo --seeds', () => {
  it('reads distinct seeds from 0 to 999,999, and refuses the rest with a usage error', () => {
    expect(seedList('4, 5,6')).toEqual([4, 5, 6]);
    expect(seedList('0')).toEqual([0]);
    for (const bad of ['1,x', '2,2', '-1', '', ' ', '1,,2', '1.5', '1000000']) expect(() => seedList(bad), bad).toThrow(expect.objectContaining({ code: 'ERR_TDPO_USAGE' }));
  });
});

describe('demo --set', () => {
  const usage = expect.objectContaining({ code: 'ERR_TDPO_USAGE' });
  it('overrides the training regime and the sizes, typed, and lists what changed', () => {
    const s = withOverrides(fullSettings, ['trainSteps=160', 'lr=1e-4', 'minGap=0', 'beta=0.2', 'samplesPerPrompt=+8', 'evalPairs=100.0']);
    expect(s).toEqual({ ...fullSettings, trainSteps: 160, lr: 1e-4, minGap: 0, evalPairs: 100 });
    expect(fullSettings.trainSteps).toBe(40); // the defaults are not touched
    // beta=0.2 and samplesPerPrompt=+8 are the defaults: not changes.
    expect(overridden(fullSettings, s)).toEqual(['minGap=0', 'trainSteps=160', 'evalPairs=100', 'lr=0.0001']);
    expect(overridden(fullSettings, withOverrides(fullSettings, []))).toEqual([]);
    // --seeds is a change of the command line's too.
    expect(overridden(fullSettings, { ...s, seeds: [9] })).toEqual(['seeds=9', 'minGap=0', 'trainSteps=160', 'evalPairs=100', 'lr=0.0001']);
    expect(overridden(quickSettings, { ...quickSettings, seeds: [4, 5] })).toEqual(['seeds=4,5']);
    // The last of a repeated key wins, as with train --set.
    expect(withOverrides(fullSettings, ['lr=1', 'lr=2e-4']).lr).toBe(2e-4);
    expect(withOverrides(fullSettings, ['beta=1e-6', 'minGap=2', 'evalEvery=1']).beta).toBe(1e-6); // the bounds themselves
  });
  it('refuses unknown keys, bad values, values past their bounds and settings that cannot run together', () => {
    const refused = (items: string[], message: RegExp) => expect(() => withOverrides(fullSettings, items), items.join(' ')).toThrow(expect.objectContaining({ code: 'ERR_TDPO_USAGE', message: expect.stringMatching(message) }));
    for (const bad of ['trainSteps', '=3', '']) refused([bad], /expects KEY=VALUE/);
    for (const bad of ['nope=1', 'seeds=4', 'methods=1', 'vocabTokens=100', 'constructor=1', 'toString=1', 'loss.beta=0.2', 'TrainSteps=40']) refused([bad], /not a setting --set can change/);
    for (const bad of [
      'trainSteps=0', 'trainSteps=1.5', 'trainSteps=', 'trainSteps= ', 'trainSteps= 40', 'trainSteps=1e400', 'trainSteps=x', 'trainSteps=0x28', 'trainSteps=0b101000',
      'trainSteps=-40', 'lr=0', 'lr=-1', 'lr=2', 'beta=NaN', 'beta=Infinity', 'beta=1e-7', 'beta=1e9', 'minGap=-0.1', 'minGap=2.5',
      'samplesPerPrompt=1', 'samplesPerEvalPrompt=1000000000', 'sftSteps=1e15', 'trainBatch=5000',
    ]) {
      refused([bad], new RegExp(`^--set ${bad.split('=')[0]} must be an? (integer|number) >=? `));
    }
    refused(['trainSteps=30'], /multiple of evalEvery \(20\)/);
    refused(['evalEvery=1', 'trainSteps=101'], /at most 100 evaluations/);
    refused(['evalPrompts=3', 'samplesPerEvalPrompt=1'], /must be even/);
    refused(['evalPairs=1900'], /evalPairs \+ trainBatch \(1900 \+ 64\) must be at most pairPrompts \(1920\)/);
    expect(withOverrides(fullSettings, ['trainSteps=30', 'evalEvery=10']).trainSteps).toBe(30);
    expect(withOverrides(fullSettings, ['evalEvery=1', 'trainSteps=100']).trainSteps).toBe(100);
  });
  it('checks the corpus has the prompts asked for, before πref trains', () => {
    expect(() => checkPrompts(fullSettings, 2176)).not.toThrow(); // 256 + 1,920
    expect(() => checkPrompts(fullSettings, 2175)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_USAGE', message: expect.stringMatching(/256 \+ 1920\) exceed the 2175 held-out prompts/) }));
  });
  it('names every setting it can change in --help', () => {
    const listed = /-s, --set KEY=VALUE\n[^\n]*\n((?:\s{19}[^\n]*\n)+)/.exec(demoHelp)?.[1] ?? '';
    const names = listed.split(/[\s,;:]+/).filter((w) => Object.hasOwn(tunable, w));
    expect(names.sort()).toEqual(Object.keys(tunable).sort());
  });
});

describe('demo stages folder', () => {
  const root = mkdtempSync(path.join(tmpdir(), 'tdpo-stages-'));
  const dir = path.join(root, 'stages');
  it('keeps stages made with the same settings, and empties them for other settings or --fresh', () => {
    expect(prepareStages(dir, quickSettings, false)).toEqual({ why: null, kept: [] }); // new
    mkdirSync(path.join(dir, 'runs'));
    writeFileSync(path.join(dir, 'pairs.jsonl'), '{}\n');
    expect(prepareStages(dir, quickSettings, false)).toEqual({ why: null, kept: [] });
    expect(existsSync(path.join(dir, 'pairs.jsonl'))).toBe(true);
    // Another SFT (120 against 400 steps): nothing is kept.
    expect(prepareStages(dir, fullSettings, false)).toEqual({ why: 'other settings', kept: [] });
    expect(existsSync(path.join(dir, 'pairs.jsonl'))).toBe(false);
    // Each seed's pairs and their parts, and the one pair file of versions before 5, are the demo's.
    const ours = ['pairs.jsonl', 'pairs-seed1.jsonl', 'pairs-stats-seed2.json', 'pairs-seed3-eval.jsonl', 'pairs-seed3-train.jsonl'];
    for (const f of ours) writeFileSync(path.join(dir, f), '{}\n');
    expect(prepareStages(dir, fullSettings, true)).toEqual({ why: 'fresh', kept: [] });
    for (const f of ours) expect(existsSync(path.join(dir, f)), f).toBe(false);
    expect(JSON.parse(readFileSync(path.join(dir, 'settings.json'), 'utf8')).settings).toEqual(fullSettings);
  });
  const made = () => {
    mkdirSync(path.join(dir, 'reference', 'final'), { recursive: true });
    mkdirSync(path.join(dir, 'runs', 'dpo-seed1'), { recursive: true });
    writeFileSync(path.join(dir, 'reference', 'final', 'model.safetensors'), '');
    for (const seed of fullSettings.seeds) {
      for (const f of [`pairs-seed${seed}.jsonl`, `pairs-stats-seed${seed}.json`, `pairs-seed${seed}-train.jsonl`, `pairs-seed${seed}-eval.jsonl`]) writeFileSync(path.join(dir, f), '{}\n');
    }
    writeFileSync(path.join(dir, 'sft.jsonl'), '{}\n');
  };
  const present = () => readdirSync(dir).filter((e) => !/^pairs-(stats-)?seed[23]/.test(e)).sort();
  it('keeps the stages a change of settings does not touch, and redoes the others', () => {
    prepareStages(dir, fullSettings, true);
    made();
    // A new learning rate or length: πref and each seed's pairs stay; the runs and the splits go.
    expect(prepareStages(dir, { ...fullSettings, lr: 1e-4, trainSteps: 80, evalPairs: 100 }, false)).toEqual({ why: 'other settings', kept: ['πref', 'the pairs'] });
    expect(present()).toEqual(['pairs-seed1.jsonl', 'pairs-stats-seed1.json', 'reference', 'settings.json', 'sft.jsonl']);
    // Another draw of the pairs (a gap threshold): πref stays.
    made();
    expect(prepareStages(dir, { ...fullSettings, minGap: 0.5 }, false)).toEqual({ why: 'other settings', kept: ['πref'] });
    expect(present()).toEqual(['reference', 'settings.json', 'sft.jsonl']);
    // Another SFT: nothing stays. Nor with another version's, another model's, or an unreadable settings.json.
    made();
    expect(prepareStages(dir, { ...fullSettings, minGap: 0.5, sftSteps: 300 }, false)).toEqual({ why: 'other settings', kept: [] });
    expect(present()).toEqual(['settings.json']);
    const written = readFileSync(path.join(dir, 'settings.json'), 'utf8');
    for (const text of [written.replace(/"version":\d+/, '"version":4'), written.replace(/"n_layer":\d+/, '"n_layer":9'), written.replace(/"settings":\{.*\}\}/, '"settings":null}'), '{"version":', '[]', 'null']) {
      made();
      writeFileSync(path.join(dir, 'settings.json'), text);
      expect(prepareStages(dir, { ...fullSettings, lr: 1e-4 }, false), text).toEqual({ why: 'other settings', kept: [] });
      expect(present()).toEqual(['settings.json']);
    }
    // Kept but unfinished (πref's SFT stopped before final/, no seed's draw complete): not named as kept.
    prepareStages(dir, fullSettings, false);
    mkdirSync(path.join(dir, 'reference', 'step-10'), { recursive: true });
    writeFileSync(path.join(dir, 'pairs-seed1.jsonl'), '{}\n');
    expect(prepareStages(dir, { ...fullSettings, lr: 1e-4 }, false)).toEqual({ why: 'other settings', kept: [] });
    expect(present()).toEqual(['pairs-seed1.jsonl', 'reference', 'settings.json']);
    prepareStages(dir, fullSettings, true);
  });
  it('places every setting: a change keeps exactly the stages made before the first one it is an input of', () => {
    const changed: { [K in keyof DemoSettings]: DemoSettings[K] } = {
      seeds: [1, 2, 3, 99], vocabTokens: 4096, sftSteps: 401, sftBatch: 32, promptTokens: 4, continuationTokens: 11, pairPrompts: 1000,
      samplesPerPrompt: 4, minGap: 0.6, trainSteps: 60, trainBatch: 32, evalEvery: 10, evalPrompts: 128, samplesPerEvalPrompt: 2,
      evalPairs: 100, beta: 0.5, lr: 1e-4, methods: fullSettings.methods.slice(0, 2),
    };
    const reference = new Set(['vocabTokens', 'sftSteps', 'sftBatch']);
    const pairs = new Set(['promptTokens', 'continuationTokens', 'pairPrompts', 'samplesPerPrompt', 'minGap', 'evalPrompts']);
    expect(Object.keys(changed).sort()).toEqual(Object.keys(fullSettings).sort());
    for (const key of Object.keys(fullSettings) as Array<keyof DemoSettings>) {
      expect(changed[key], key).not.toEqual(fullSettings[key]);
      prepareStages(dir, fullSettings, true);
      made();
      const { kept } = prepareStages(dir, { ...fullSettings, [key]: changed[key] }, false);
      expect(kept, key).toEqual(reference.has(key) ? [] : pairs.has(key) ? ['πref'] : ['πref', 'the pairs']);
    }
    prepareStages(dir, fullSettings, true);
  });
  it('writes a stage file whole, and counts a half-written one as its own', () => {
    prepareStages(dir, fullSettings, true);
    writeStageFile(path.join(dir, 'pairs-stats-seed1.json'), '{"pairs":1}\n');
    expect(readdirSync(dir).sort()).toEqual(['pairs-stats-seed1.json', 'settings.json']);
    writeFileSync(path.join(dir, 'pairs-seed1.jsonl.tmp-4242'), '{"prompt');
    expect(prepareStages(dir, { ...fullSettings, minGap: 0.5 }, false).why).toBe('other settings'); // not refused as foreign
    expect(readdirSync(dir)).toEqual(['settings.json']);
  });
  it('starts over on stages of an earlier version (no settings.json)', () => {
    rmSync(path.join(dir, 'settings.json'));
    mkdirSync(path.join(dir, 'reference'));
    expect(prepareStages(dir, fullSettings, false)).toEqual({ why: 'other settings', kept: [] });
    expect(existsSync(path.join(dir, 'reference'))).toBe(false);
  });
  it('never deletes a folder holding files the demo does not write', () => {
    writeFileSync(path.join(dir, 'pairs-seed1.txt'), 'mine');
    expect(() => prepareStages(dir, quickSettings, false)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_DEMO_STAGES', message: expect.stringContaining('pairs-seed1.txt') }));
    rmSync(path.join(dir, 'pairs-seed1.txt'));
    writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    for (const [s, fresh] of [[quickSettings, false], [fullSettings, true]] as const) {
      expect(() => prepareStages(dir, s, fresh)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_DEMO_STAGES', message: expect.stringContaining('notes.txt') }));
    }
    expect(readFileSync(path.join(dir, 'notes.txt'), 'utf8')).toBe('mine');
    // With the same settings nothing is deleted, so nothing is refused.
    expect(prepareStages(dir, fullSettings, false)).toEqual({ why: null, kept: [] });
    rmSync(root, { recursive: true, force: true });
  });
});
