// Stage 3, the preference pairs: n samples from πref per prompt, scored by the sentiment reward;
// the best and the worst make a pair when their reward gap is large enough. Two samples per prompt
// scored by a sparse lexicon tie on most prompts and differ by a word or two on the rest: too little
// signal for a preference to be learned. The extremes of n samples differ by more, and the gap
// threshold drops the pairs that still carry little.
//
// Samples have a fixed length, as the paper's: πref may end a sentence (EOS) and begin another
// within it. Chosen and rejected then have as many tokens, so a preference cannot ride on length,
// and no padding is computed.
import { readFileSync } from 'node:fs';
import { Model } from '../index.js';
import type { Corpus } from './corpus.js';
import { sentimentScore } from './reward.js';
import { continuationText, heldOutPrompts, pairFiles, pairsDrawn, writeStageFile, type DemoSettings } from './stages.js';
import type { NarrowVocab } from './vocab.js';

export interface Scored {
  ids: number[];
  reward: number;
}

export type PairChoice = { chosen: Scored; rejected: Scored; gap: number } | { drop: 'empty' | 'small gap'; gap?: number };

/**
 * Best-of-n against worst-of-n; ties between equally scored samples go to the earliest, so the
 * choice is repeatable. Empty samples say nothing about sentiment and are left out.
 */
export function bestWorstPair(samples: Scored[], minGap: number): PairChoice {
  const usable = samples.filter((s) => s.ids.length > 0);
  if (usable.length < 2) return { drop: 'empty' };
  let best = usable[0];
  let worst = usable[0];
  for (const s of usable) {
    if (s.reward > best.reward) best = s;
    if (s.reward < worst.reward) worst = s;
  }
  const gap = best.reward - worst.reward;
  return gap < minGap || gap === 0 ? { drop: 'small gap', gap } : { chosen: best, rejected: worst, gap };
}

/** Width of the report's gap bins (VADER's compound score lies in [-1, 1], so gaps in [0, 2]). */
export const GAP_BIN = 0.1;

/** Prompts whose best − worst gap lies in [from, from + GAP_BIN): kept as pairs, or dropped as too small. */
export interface GapBin {
  from: number;
  kept: number;
  dropped: number;
}

export interface PairStats {
  prompts: number;
  samplesPerPrompt: number;
  minGap: number;
  pairs: number;
  /** Prompts with fewer than two non-empty samples. */
  empty: number;
  /** Prompts whose best and worst samples differ by less than minGap. */
  smallGap: number;
  /** Best − worst reward over every prompt with two non-empty samples, in bins of GAP_BIN from 0. */
  gapBins: GapBin[];
  /** Means over the kept pairs. */
  chosenReward: number;
  rejectedReward: number;
}

/** Counts added up by bin index (bin i starts at i · GAP_BIN), from the smallest gap up. */
function tallyBins(counts: Array<{ i: number; kept: number; dropped: number }>): GapBin[] {
  const bins = new Map<number, GapBin>();
  for (const { i, kept, dropped } of counts) {
    const bin = bins.get(i) ?? { from: Number((i * GAP_BIN).toFixed(6)), kept: 0, dropped: 0 };
    bins.set(i, { from: bin.from, kept: bin.kept + kept, dropped: bin.dropped + dropped });
  }
  return [...bins.entries()].sort((a, b) => a[0] - b[0]).map(([, b]) => b);
}

/** Tally of choices into PairStats (the kept pairs' means included). */
export function pairStats(choices: PairChoice[], samplesPerPrompt: number, minGap: number): PairStats {
  const kept = choices.filter((c) => 'chosen' in c);
  // Integer bin indices, so that 0.3 / 0.1 landing on 2.9999 cannot misplace a gap of 0.3.
  const gapBins = tallyBins(
    choices.flatMap((c) => (c.gap === undefined ? [] : [{ i: Math.floor(c.gap / GAP_BIN + 1e-9), kept: 'chosen' in c ? 1 : 0, dropped: 'chosen' in c ? 0 : 1 }])),
  );
  const mean = (f: (c: (typeof kept)[number]) => number) => (kept.length ? kept.reduce((a, c) => a + f(c), 0) / kept.length : 0);
  return {
    prompts: choices.length,
    samplesPerPrompt,
    minGap,
    pairs: kept.length,
    empty: choices.filter((c) => 'drop' in c && c.drop === 'empty').length,
    smallGap: choices.filter((c) => 'drop' in c && c.drop === 'small gap').length,
    gapBins,
    chosenReward: mean((c) => c.chosen.reward),
    rejectedReward: mean((c) => c.rejected.reward),
  };
}

/** Several seeds' statistics as one draw: counts and gap bins summed, the kept pairs' means weighted by their counts. */
export function pooledPairStats(list: PairStats[]): PairStats {
  const sum = (f: (st: PairStats) => number) => list.reduce((a, st) => a + f(st), 0);
  const pairs = sum((st) => st.pairs);
  return {
    ...list[0],
    prompts: sum((st) => st.prompts),
    pairs,
    empty: sum((st) => st.empty),
    smallGap: sum((st) => st.smallGap),
    gapBins: tallyBins(list.flatMap((st) => st.gapBins.map((b) => ({ ...b, i: Math.round(b.from / GAP_BIN) })))),
    chosenReward: pairs ? sum((st) => st.chosenReward * st.pairs) / pairs : 0,
    rejectedReward: pairs ? sum((st) => st.rejectedReward * st.pairs) / pairs : 0,
  };
}

/**
 * Writes a seed's pairs and their statistics (pairFiles); reused when both exist. Every seed draws
 * its own samples from πref for the same prompts, so the seeds repeat the draw of the pairs too.
 */
export async function samplePairs(
  dir: string,
  refDir: string,
  corpus: Corpus,
  vocab: NarrowVocab,
  s: DemoSettings,
  seed: number,
  progress: (done: number, total: number) => void = () => {},
): Promise<PairStats> {
  const { pairs: file, stats: statsFile } = pairFiles(dir, seed);
  if (pairsDrawn(dir, seed)) return JSON.parse(readFileSync(statsFile, 'utf8')) as PairStats;
  // The first evalPrompts held-out prompts are the evaluation's; the pairs use the next ones.
  const prompts = heldOutPrompts(corpus, vocab, s.promptTokens, s.evalPrompts + s.pairPrompts).slice(s.evalPrompts);
  if (prompts.length < s.pairPrompts) {
    const message = `the held-out sentences give ${prompts.length} pair prompts after the ${s.evalPrompts} evaluation prompts, not ${s.pairPrompts}`;
    throw Object.assign(new RangeError(message), { code: 'ERR_TDPO_DEMO_PAIRS' });
  }
  const ref = await Model.load(refDir);
  const n = s.samplesPerPrompt;
  // About 512 rows per generate call: large enough to keep the cores busy, small enough for memory.
  const chunk = Math.max(1, Math.floor(512 / n));
  const choices: PairChoice[] = [];
  const lines: string[] = [];
  for (let i = 0; i < prompts.length; i += chunk) {
    const part = prompts.slice(i, i + chunk);
    const batch = Array.from({ length: n }, () => part.map((p) => Int32Array.from(p))).flat();
    const outs = await ref.generate(batch, { maxNewTokens: s.continuationTokens, temperature: 1, seed: 1_000_000 * seed + i });
    part.forEach((p, j) => {
      const samples = Array.from({ length: n }, (_, k) => {
        const c = continuationText(outs[k * part.length + j], vocab);
        return { ids: c.ids, reward: sentimentScore(c.text) };
      });
      const c = bestWorstPair(samples, s.minGap);
      choices.push(c);
      if ('chosen' in c) {
        lines.push(JSON.stringify({ prompt_ids: p, chosen_ids: c.chosen.ids, rejected_ids: c.rejected.ids, chosen_reward: c.chosen.reward, rejected_reward: c.rejected.reward }));
      }
    });
    progress(Math.min(i + chunk, prompts.length), prompts.length);
  }
  ref.dispose();
  const stats = pairStats(choices, n, s.minGap);
  // The pairs first: the stats file says the draw is complete (pairsDrawn).
  writeStageFile(file, `${lines.join('\n')}\n`);
  writeStageFile(statsFile, `${JSON.stringify(stats)}\n`);
  return stats;
}

/** The pairs' gaps as "from–to: prompts" from smallest up, dropped ones counted; for the report. */
export function gapLine(st: PairStats): string {
  const d = (x: number) => x.toFixed(1);
  return st.gapBins
    .map((b) => {
      const n = b.kept + b.dropped;
      const note = b.kept === 0 ? ' (dropped)' : b.dropped > 0 ? ` (${b.dropped} dropped)` : '';
      return `${d(b.from)}–${d(b.from + GAP_BIN)}: ${n}${note}`;
    })
    .join(', ');
}
