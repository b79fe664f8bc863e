// Preference pairs into token ids and batches, exactly as the official TDPO / DPO code does
// (tokenize_batch_element and its collate): no special tokens, EOS appended to each response,
// prompt truncated first (keep_end for HH, keep_start otherwise), then the responses; prompt
// labels -100; right padding; chosen rows above rejected rows.
import { codedError, isArrayOrTypedArray, showValue } from '../errors.js';
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

const MAX_ID = 0x7fffffff; // ids travel as int32

const inputError = (message: string) => codedError('RangeError', 'ERR_TDPO_INPUT', message);

/** Throws unless every id is an integer in [0, 2^31): 3.9, NaN or 2^32 + 5 would become another token. */
function checkIds(ids: ArrayLike<number>, name: string): void {
  // A plain { length: 2 ** 31 } would be walked element by element.
  if (!isArrayOrTypedArray(ids)) throw codedError('TypeError', 'ERR_TDPO_TYPE', `${name} must be an array or typed array of token ids`);
  for (let i = 0; i < ids.length; i++) {
    const x = ids[i];
    if (!(Number.isInteger(x) && x >= 0 && x <= MAX_ID)) throw inputError(`${name}[${i}] must be a token id (an integer in [0, 2^31)), got ${showValue(x)}`);
  }
}

const tokenIds = (ids: ArrayLike<number>, name: string): number[] => {
  checkIds(ids, name);
  return Array.from(ids);
};

function checkTruncation(o: TruncationOptions): void {
  if (!Number.isSafeInteger(o?.maxLength) || o.maxLength < 2) throw inputError(`maxLength must be an integer >= 2, got ${showValue(o?.maxLength)}`);
  if (!Number.isSafeInteger(o.maxPromptLength) || o.maxPromptLength < 1 || o.maxPromptLength >= o.maxLength) {
    throw inputError(`maxPromptLength must be an integer in [1, maxLength) = [1, ${o.maxLength}), got ${showValue(o.maxPromptLength)}`);
  }
  if (o.truncationMode !== 'keep_start' && o.truncationMode !== 'keep_end') throw inputError(`truncationMode must be 'keep_start' or 'keep_end', got ${showValue(o.truncationMode)}`);
}

export function tokenizePair(prompt: ArrayLike<number>, chosen: ArrayLike<number>, rejected: ArrayLike<number>, eosTokenId: number, o: TruncationOptions): TokenizedPair {
  checkTruncation(o);
  const [eos] = tokenIds([eosTokenId], 'eosTokenId');
  let p = tokenIds(prompt, 'prompt');
  let c = [...tokenIds(chosen, 'chosen'), eos];
  let r = [...tokenIds(rejected, 'rejected'), eos];
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
  if (!Array.isArray(pairs) || pairs.length === 0) throw inputError('collatePairs needs at least one pair');
  const [pad] = tokenIds([padId], 'padId');
  const rows = [...pairs.map((x) => x?.chosen), ...pairs.map((x) => x?.rejected)];
  let T = 0; // a loop: Math.max(...rows) overflows the stack past ~100k rows
  rows.forEach((r, b) => {
    const where = `pairs[${b % pairs.length}].${b < pairs.length ? 'chosen' : 'rejected'}`;
    if (!r || !Array.isArray(r.inputIds) || !Array.isArray(r.labels) || r.inputIds.length !== r.labels.length || r.inputIds.length === 0) {
      throw inputError(`${where} must hold inputIds and labels, arrays of one non-zero length (tokenizePair makes them)`);
    }
    checkIds(r.inputIds, `${where}.inputIds`);
    r.labels.forEach((l, t) => {
      if (l !== -100 && !(Number.isInteger(l) && l >= 0 && l <= MAX_ID)) throw inputError(`${where}.labels[${t}] must be a token id or -100, got ${showValue(l)}`);
    });
    T = Math.max(T, r.inputIds.length);
  });
  const B = rows.length;
  const inputIds = new Int32Array(B * T).fill(pad);
  const labels = new Int32Array(B * T).fill(-100);
  const attentionMask = new Int32Array(B * T);
  rows.forEach((r, b) => {
    inputIds.set(r.inputIds, b * T);
    labels.set(r.labels, b * T);
    attentionMask.fill(1, b * T, b * T + r.inputIds.length);
  });
  return { inputIds, labels, attentionMask, shape: [B, T] };
}
