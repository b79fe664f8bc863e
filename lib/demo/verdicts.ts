// The verdicts on the paper's claims, by rules fixed before any result was read: TDPO2 (α = 0.5)
// keeps a smaller KL margin than DPO, its reward–KL frontier dominates DPO's, and every trained
// method learns the preference (held-out implicit-reward accuracy above chance by more than two
// standard errors). Each is computed on the means over seeds, as the table shows them, and checked
// in every seed on its own: on another machine the digits move, and what should hold is the verdict.
import type { EvalPoint } from './experiment.js';
import { aboveChance, binomialSe, mean, pairedDifference } from './stats.js';

export const TDPO2 = 'TDPO2 α=0.5';
export const DPO = 'DPO';

/**
 * A point's KL from πref as a frontier reads it. The verdicts use the samples' forward KL(πref ‖ πθ),
 * as fixed before any run; the secondary analysis (README, pre-registered 2026-12-04) the reverse
 * KL(πθ ‖ πref), the axis of the paper's Figure 3(a).
 */
export type KlOf = (p: EvalPoint) => number;
export const forwardKl: KlOf = (p) => p.sampleKl;
export const reverseKl: KlOf = (p) => p.sampleReverseKl;

/**
 * Does `a`'s reward-KL frontier weakly dominate `b`'s: for each trained point of b (step > 0; at
 * step 0 every method is πref itself), a point of a with KL <= and reward >=?
 */
export function dominates(a: EvalPoint[], b: EvalPoint[], kl: KlOf = forwardKl): { dominated: number; of: number } {
  const trained = b.filter((q) => q.step > 0);
  const ok = trained.filter((q) => a.some((p) => kl(p) <= kl(q) && p.reward >= q.reward));
  return { dominated: ok.length, of: trained.length };
}

/** One trained DPO point of a seed against the TDPO2 point of that seed with the most reward at no more KL. */
export interface FrontierCheck {
  seed: number;
  dpo: EvalPoint;
  /** Undefined when every TDPO2 point of the seed has more KL. */
  best?: EvalPoint;
  dominated: boolean;
  /**
   * best's reward − dpo's, paired sample by sample, with its standard error: whether a row's "no"
   * (or "yes") is more than sampling noise. Only when both points carry their samples' rewards.
   */
  paired?: { diff: number; se: number };
}

/**
 * The frontier rule of `verdicts` within each seed, point by point: a seed holds when every row of
 * it is dominated. (The pooled count lets a point of any seed dominate, so it may find more.)
 */
export function frontierChecks(points: EvalPoint[], seeds: number[], kl: KlOf = forwardKl): FrontierCheck[] {
  return seeds.flatMap((seed) => {
    const own = points.filter((p) => p.seed === seed && p.method === TDPO2);
    return points
      .filter((q) => q.seed === seed && q.method === DPO && q.step > 0)
      .sort((a, b) => a.step - b.step)
      .map((dpo) => {
        const best = own.filter((p) => kl(p) <= kl(dpo)).sort((a, b) => b.reward - a.reward)[0];
        const paired = best?.sampleRewards && dpo.sampleRewards ? pairedDifference(dpo.sampleRewards, best.sampleRewards) : undefined;
        return { seed, dpo, best, dominated: best !== undefined && best.reward >= dpo.reward, ...(paired && { paired }) };
      });
  });
}

const lastOf = (points: EvalPoint[], method: string, seed: number) =>
  points.filter((p) => p.method === method && p.seed === seed).sort((a, b) => b.step - a.step)[0];

export interface Verdict {
  claim: string;
  answer: 'yes' | 'no' | 'partly';
  /** In how many seeds the claim holds on that seed's points alone. */
  seedsHolding: number;
  seeds: number;
  detail: string;
}

export function verdicts(points: EvalPoint[], seeds: number[], methods: string[], evalPairs: number): Verdict[] {
  const n = seeds.length;
  const ofSeeds = `${n} seed${n > 1 ? 's' : ''}`;
  const marginAt = (m: string) => mean(seeds.map((s) => lastOf(points, m, s).klMargin));
  const [tdpo2, dpo] = [marginAt(TDPO2), marginAt(DPO)];
  const marginSeeds = seeds.filter((s) => lastOf(points, TDPO2, s).klMargin < lastOf(points, DPO, s).klMargin).length;


  const accuracy = methods.map((m) => {
    const perSeed = seeds.map((s) => lastOf(points, m, s).accuracy);
    return { m, acc: mean(perSeed), seeds: perSeed.filter((a) => aboveChance(a, evalPairs)).length };
  });
  const accAll = accuracy.every((a) => aboveChance(a.acc, evalPairs));
  const accSeeds = seeds.filter((_, i) => methods.every((m) => aboveChance(lastOf(points, m, seeds[i]).accuracy, evalPairs))).length;
  const worst = accuracy.reduce((a, b) => (b.acc < a.acc ? b : a));

  return [
    {
      claim: 'TDPO2 keeps a smaller KL margin than DPO',
      answer: tdpo2 < dpo ? 'yes' : 'no',
      seedsHolding: marginSeeds,
      seeds: n,
      detail: `${tdpo2.toFixed(3)} against ${dpo.toFixed(3)} at the last evaluation (mean over ${ofSeeds}); smaller in ${marginSeeds} of ${n} seeds`,
    },
    frontierVerdict(points, seeds, forwardKl, "TDPO2's reward–KL frontier dominates DPO's", 'sample KL'),
    {
      claim: 'Every trained method learns the preference',
      answer: accAll ? 'yes' : 'no',
      seedsHolding: accSeeds,
      seeds: n,
      detail:
        `held-out implicit-reward accuracy is above 0.5 by more than two standard errors for ${accuracy.filter((a) => aboveChance(a.acc, evalPairs)).length} ` +
        `of ${methods.length} methods (lowest: ${worst.m}, ${worst.acc.toFixed(3)} ± ${binomialSe(worst.acc, evalPairs).toFixed(3)}, one seed's binomial error on ${evalPairs} pairs); ` +
        `for every method within a seed in ${accSeeds} of ${n} seeds`,
    },
  ];
}

/** The frontier rule on the points pooled over seeds, and counted seed by seed (frontierChecks). */
function frontierVerdict(points: EvalPoint[], seeds: number[], kl: KlOf, claim: string, klName: string): Verdict {
  const n = seeds.length;
  const pooled = dominates(points.filter((p) => p.method === TDPO2), points.filter((p) => p.method === DPO), kl);
  const checks = frontierChecks(points, seeds, kl);
  const domSeeds = seeds.filter((s) => checks.every((c) => c.seed !== s || c.dominated)).length;
  return {
    claim,
    answer: pooled.dominated === pooled.of ? 'yes' : pooled.dominated === 0 ? 'no' : 'partly',
    seedsHolding: domSeeds,
    seeds: n,
    detail:
      `${pooled.dominated} of ${pooled.of} trained DPO evaluation points (all seeds) have a ${TDPO2} point with no more ${klName} ` +
      `and at least as much reward; within each seed alone it holds in ${domSeeds} of ${n}`,
  };
}

/**
 * The secondary analysis pre-registered on 2026-12-04 (README), after the frontier verdict had
 * failed in every reported run: the same rule with the samples' reverse KL. Reported beside the
 * verdicts, never as one of them.
 */
export function reverseKlFrontier(points: EvalPoint[], seeds: number[]): Verdict {
  return frontierVerdict(points, seeds, reverseKl, "TDPO2's reward–KL frontier dominates DPO's on the reverse KL(πθ ‖ πref)", 'reverse KL');
}

export function verdictLines(vs: Verdict[]): string[] {
  return vs.map((v) => `- **${v.claim}:** ${v.answer} — ${v.detail}.`);
}
