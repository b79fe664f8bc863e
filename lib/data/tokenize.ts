// Preference pairs into token ids and batches, exactly as the official TDPO / DPO code does
// (tokenize_batch_element and its collate): no special tokens, EOS appended to each response,
// prompt truncated first (keep_end for HH, keep_start otherwise), then the responses; prompt
// labels -100; right padding; chosen rows above rejected rows.
import type { TrainBatch } from '../train/train-step.js';

/** Each side's labels are unshifted (InputLabels): the prompt's -100, then the response's own ids. */
export interface TokenizedPair {
  chosen: { inputIds: number[]; labels: number[] };
  rejected: { inputIds: number[]; labels: number[] };
}

export interface TruncationOptions {
  maxLength: number;
  maxPromptLength: number;
  truncationMode: 'keep_start' | 'keep_end';
}

export function tokenizePair(prompt: ArrayLike<number>, chosen: ArrayLike<number>, rejected: ArrayLike<number>, eosTokenId: number, o: TruncationOptions): TokenizedPair {
  let p = Array.from(prompt);
  let c = [...Array.from(chosen), eosTokenId];
  let r = [...Array.from(rejected), eosTokenId];
  const longer = Math.max(c.length, r.length);
  if (p.length + longer > o.maxLength) {
    p = o.truncationMode === 'keep_start' ? p.slice(0, o.maxPromptLength) : p.slice(-o.maxPromptLength);
  }
  if (p.length + longer > o.maxLength) {
    c = c.slice(0, o.maxLength - o.maxPromptLength);
    r = r.slice(0, o.maxLength - o.maxPromptLength);
  }
  const seq = (resp: number[]) => ({ inputIds: [...p, ...resp], labels: [...p.map(() => -100), ...resp] });
  return { chosen: seq(c), rejected: seq(r) };
}

/** [chosen_0..chosen_{n-1}, rejected_0..rejected_{n-1}], right-padded with padId (labels -100). */
export function collatePairs(pairs: TokenizedPair[], padId = 0): TrainBatch {
  const rows = [...pairs.map((x) => x.chosen), ...pairs.map((x) => x.rejected)];
  const T = Math.max(...rows.map((r) => r.inputIds.length));
  const B = rows.length;
  const inputIds = new Int32Array(B * T).fill(padId);
  const labels = new Int32Array(B * T).fill(-100);
  const attentionMask = new Int32Array(B * T);
  rows.forEach((r, b) => {
    inputIds.set(r.inputIds, b * T);
    labels.set(r.labels, b * T);
    attentionMask.fill(1, b * T, b * T + r.inputIds.length);
  });
  return { inputIds, labels, attentionMask, shape: [B, T] };
}
