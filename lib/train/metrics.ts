// The official metric names, from the per-pair statistics of one step's micro-batches.
import type { MicroStats } from './train-step.js';

export type Metrics = Record<string, number>;

const mean = (xs: ArrayLike<number>) => (xs.length ? Array.from(xs).reduce((a, b) => a + b, 0) / xs.length : 0);
const cat = (parts: Float32Array[]) => parts.flatMap((p) => Array.from(p));

export function stepMetrics(micro: MicroStats[], sft: boolean): Metrics {
  const loss = mean(micro.map((m) => m.loss));
  if (sft) return { loss };
  const cr = cat(micro.map((m) => m.chosenRewards));
  const rr = cat(micro.map((m) => m.rejectedRewards));
  const ck = mean(cat(micro.map((m) => m.chosenKl)));
  const rk = mean(cat(micro.map((m) => m.rejectedKl)));
  return {
    loss,
    'rewards/chosen': mean(cr),
    'rewards/rejected': mean(rr),
    'rewards/accuracies': mean(cr.map((c, i) => (c > rr[i] ? 1 : 0))),
    'rewards/margins': mean(cr.map((c, i) => c - rr[i])),
    'kl/chosen': ck,
    'kl/rejected': rk,
    'kl/margin': Math.abs(ck - rk),
    'logps/chosen': mean(cat(micro.map((m) => m.chosenLogps))),
    'logps/rejected': mean(cat(micro.map((m) => m.rejectedLogps))),
  };
}
