// The official metric names, from the per-pair statistics of one step's micro-batches. They are
// computed from sums (metricSums) so that data-parallel ranks can add theirs with one allreduce
// and log exactly what one process would log for the whole batch (distributed.ts).
import type { MicroStats } from './train-step.js';

export type Metrics = Record<string, number>;

const sum = (xs: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i];
  return s;
};

/**
 * Preference: [pairs, Σ loss, Σ chosen reward, Σ rejected reward, Σ correct, Σ margin, Σ chosen KL,
 * Σ rejected KL, Σ chosen logp, Σ rejected logp, Σ d², Σ chosen entropy, Σ rejected entropy],
 * each over pairs, d being a pair's rejected KL − chosen KL (a micro-batch's loss is its mean over
 * pairs, so it counts once per pair: the loss the gradient is taken of). SFT: [micro-batches,
 * Σ micro-batch loss].
 */
export function metricSums(micro: MicroStats[], sft: boolean): number[] {
  if (sft) return [micro.length, sum(micro.map((m) => m.loss))];
  const s = new Array<number>(13).fill(0);
  for (const m of micro) {
    const n = m.chosenRewards.length;
    s[0] += n;
    s[1] += m.loss * n;
    for (let i = 0; i < n; i++) {
      const c = m.chosenRewards[i];
      const r = m.rejectedRewards[i];
      s[2] += c;
      s[3] += r;
      s[4] += c > r ? 1 : 0;
      s[5] += c - r;
    }
    s[6] += sum(m.chosenKl);
    s[7] += sum(m.rejectedKl);
    s[8] += sum(m.chosenLogps);
    s[9] += sum(m.rejectedLogps);
    for (let i = 0; i < n; i++) s[10] += (m.rejectedKl[i] - m.chosenKl[i]) ** 2;
    s[11] += sum(m.chosenEntropy);
    s[12] += sum(m.rejectedEntropy);
  }
  return s;
}

export function metricsFromSums(s: ArrayLike<number>, sft: boolean): Metrics {
  const n = s[0] || 1;
  if (sft) return { loss: s[1] / n };
  const ck = s[6] / n;
  const rk = s[7] / n;
  return {
    loss: s[1] / n,
    'rewards/chosen': s[2] / n,
    'rewards/rejected': s[3] / n,
    'rewards/accuracies': s[4] / n,
    'rewards/margins': s[5] / n,
    'kl/chosen': ck,
    'kl/rejected': rk,
    'kl/margin': Math.abs(ck - rk),
    // The standard error of that mean difference over the pairs: whether a margin is more than
    // the pairs' spread (0 for a single pair).
    'kl/margin_se': s[0] > 1 ? Math.sqrt(Math.max(0, s[10] - ((s[7] - s[6]) ** 2) / s[0]) / (s[0] - 1) / s[0]) : 0,
    'logps/chosen': s[8] / n,
    'logps/rejected': s[9] / n,
    // The policy's entropy summed over a response's tokens: a collapse to near-one-hot
    // distributions shows here before it shows in the samples.
    'entropy/chosen': s[11] / n,
    'entropy/rejected': s[12] / n,
  };
}
