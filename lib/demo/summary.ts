// Evaluation points averaged over seeds, and the results table.
import type { EvalPoint } from './experiment.js';
import { binomialSe, mean } from './stats.js';

const METRICS = ['reward', 'sampleKl', 'sampleReverseKl', 'entropy', 'accuracy', 'rewardMargin', 'klChosen', 'klRejected', 'klMargin'] as const;

/**
 * A point averaged over seeds. accuracySe: the standard error of the mean accuracy, each seed's
 * binomial error on its own held-out pairs combined as for independent estimates (each seed draws
 * its own pairs); one seed's error is √seeds times larger.
 */
export type AveragedPoint = EvalPoint & { accuracySe: number };

/** A method's metrics at the last evaluation, averaged over seeds. */
export type MethodSummary = { method: string } & Pick<AveragedPoint, (typeof METRICS)[number] | 'rewardSe' | 'accuracySe'>;

/** The standard error of a mean of n independent estimates with these standard errors. */
const seOfMean = (ses: number[]) => Math.sqrt(ses.reduce((a, e) => a + e * e, 0)) / ses.length;

/** Points averaged over seeds, per method and step; each seed held out evalPairs pairs. */
export function averaged(points: EvalPoint[], evalPairs: number): AveragedPoint[] {
  const groups = new Map<string, EvalPoint[]>();
  for (const p of points) {
    const k = `${p.method}\u0000${p.step}`;
    groups.set(k, [...(groups.get(k) ?? []), p]);
  }
  // Per-sample rewards do not average across seeds, and a seed's KL-margin error is not the mean's:
  // the averaged point has neither.
  return [...groups.values()].map((g) => ({
    ...g[0],
    sampleRewards: undefined,
    klMarginSe: undefined,
    seed: -1,
    ...Object.fromEntries(METRICS.map((k) => [k, mean(g.map((p) => p[k]))])),
    rewardSe: seOfMean(g.map((p) => p.rewardSe)),
    accuracySe: seOfMean(g.map((p) => binomialSe(p.accuracy, evalPairs))),
  }));
}

export function summarise(points: EvalPoint[], evalPairs: number): MethodSummary[] {
  const avg = averaged(points, evalPairs);
  const last = Math.max(...avg.map((p) => p.step));
  return avg
    .filter((p) => p.step === last)
    .map((p) => ({ method: p.method, rewardSe: p.rewardSe, accuracySe: p.accuracySe, ...Object.fromEntries(METRICS.map((k) => [k, p[k]])) }) as MethodSummary);
}

/** The results table: reward with its standard error over the samples, accuracy with that of the
 * mean over the seeds' held-out pairs. */
export function table(rows: MethodSummary[]): string {
  const head = ['method', 'reward ± SE', 'sample KL', 'reverse KL', 'entropy', 'pair acc. ± SE', 'reward margin', 'KL chosen', 'KL rejected', 'KL margin'];
  const cell = (r: MethodSummary, k: (typeof METRICS)[number]) => {
    if (k === 'reward') return `${r.reward.toFixed(3)} ± ${r.rewardSe.toFixed(3)}`;
    if (k === 'accuracy') return `${r.accuracy.toFixed(3)} ± ${r.accuracySe.toFixed(3)}`;
    return r[k].toFixed(3);
  };
  const body = rows.map((r) => [r.method, ...METRICS.map((k) => cell(r, k))]);
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}
