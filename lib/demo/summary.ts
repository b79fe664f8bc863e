// Evaluation points averaged over seeds, and the results table.
import type { EvalPoint } from './experiment.js';
import { binomialSe } from './verdicts.js';

const METRICS = ['reward', 'sampleKl', 'entropy', 'accuracy', 'rewardMargin', 'klChosen', 'klRejected', 'klMargin'] as const;

/** A method's metrics at the last evaluation, averaged over seeds. */
export type MethodSummary = { method: string } & Pick<EvalPoint, (typeof METRICS)[number]>;

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Points averaged over seeds, per method and step. */
export function averaged(points: EvalPoint[]): EvalPoint[] {
  const groups = new Map<string, EvalPoint[]>();
  for (const p of points) {
    const k = `${p.method}\u0000${p.step}`;
    groups.set(k, [...(groups.get(k) ?? []), p]);
  }
  return [...groups.values()].map((g) => ({ ...g[0], seed: -1, ...Object.fromEntries(METRICS.map((k) => [k, mean(g.map((p) => p[k]))])) }));
}

export function summarise(points: EvalPoint[]): MethodSummary[] {
  const avg = averaged(points);
  const last = Math.max(...avg.map((p) => p.step));
  return avg
    .filter((p) => p.step === last)
    .map((p) => ({ method: p.method, ...Object.fromEntries(METRICS.map((k) => [k, p[k]])) }) as MethodSummary);
}

/** The results table; accuracy with its binomial standard error on evalPairs pairs. */
export function table(rows: MethodSummary[], evalPairs: number): string {
  const head = ['method', 'reward', 'sample KL', 'entropy', 'pair acc. ± SE', 'reward margin', 'KL chosen', 'KL rejected', 'KL margin'];
  const body = rows.map((r) => [
    r.method,
    ...METRICS.map((k) => (k === 'accuracy' ? `${r[k].toFixed(3)} ± ${binomialSe(r[k], evalPairs).toFixed(3)}` : r[k].toFixed(3))),
  ]);
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}
