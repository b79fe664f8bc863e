// The demo's statistics: standard errors of an accuracy, a mean, and a paired difference.

/** The binomial standard error of an accuracy p measured on n independent pairs. */
export function binomialSe(p: number, n: number): number {
  return n > 0 ? Math.sqrt((p * (1 - p)) / n) : 0;
}

/** Is accuracy p on n pairs above chance (0.5) by more than two standard errors? */
export function aboveChance(p: number, n: number): boolean {
  return p - 0.5 > 2 * binomialSe(p, n);
}

/** The mean reward and its standard error: the samples' standard deviation (n − 1) over √n. */
export function meanWithSe(rewards: number[]): { reward: number; rewardSe: number } {
  const n = rewards.length;
  const reward = rewards.reduce((a, r) => a + r, 0) / n;
  const variance = n > 1 ? rewards.reduce((a, r) => a + (r - reward) ** 2, 0) / (n - 1) : 0;
  return { reward, rewardSe: Math.sqrt(variance / n) };
}

/**
 * The mean of b − a over paired samples, with its standard error: two checkpoints' rewards on the
 * same rows from the same random stream differ by less noise than their separate errors suggest.
 */
export function pairedDifference(a: number[], b: number[]): { diff: number; se: number } {
  if (a.length !== b.length || a.length === 0) throw new RangeError(`pairedDifference needs two equally long, non-empty lists, got ${a.length} and ${b.length}`);
  const { reward, rewardSe } = meanWithSe(b.map((x, i) => x - a[i]));
  return { diff: reward, se: rewardSe };
}
