// The demo's statistics: standard errors of an accuracy, a mean, and a paired difference.

/** The binomial standard error of an accuracy p measured on n independent pairs. */
export function binomialSe(p: number, n: number): number {
  return n > 0 ? Math.sqrt((p * (1 - p)) / n) : 0;
}

/** Is accuracy p on n pairs above chance (0.5) by more than two standard errors? */
export function aboveChance(p: number, n: number): boolean {
  return p - 0.5 > 2 * binomialSe(p, n);
}

/** The arithmetic mean (NaN for no values). */
export const mean = (xs: ArrayLike<number>): number => {
  let sum = 0;
  for (let i = 0; i < xs.length; i++) sum += xs[i];
  return sum / xs.length;
};

/** A mean and its standard error: the values' standard deviation (n − 1) over √n. */
export function meanSe(xs: ArrayLike<number>): { mean: number; se: number } {
  const n = xs.length;
  const m = mean(xs);
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (xs[i] - m) ** 2;
  return { mean: m, se: n > 1 ? Math.sqrt(ss / (n - 1) / n) : 0 };
}

/** The mean reward and its standard error, under the names the evaluation points use. */
export function meanWithSe(rewards: number[]): { reward: number; rewardSe: number } {
  const { mean, se } = meanSe(rewards);
  return { reward: mean, rewardSe: se };
}

/**
 * The mean of b − a over paired samples, with its standard error: two checkpoints' rewards on the
 * same rows from the same random stream differ by less noise than their separate errors suggest.
 */
export function pairedDifference(a: number[], b: number[]): { diff: number; se: number } {
  if (a.length !== b.length || a.length === 0) throw new RangeError(`pairedDifference needs two equally long, non-empty lists, got ${a.length} and ${b.length}`);
  const { mean, se } = meanSe(b.map((x, i) => x - a[i]));
  return { diff: mean, se };
}
