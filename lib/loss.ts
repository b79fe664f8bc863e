// The TDPO / DPO preference loss over logits: the public, typed face of src/loss (C++).
import { native } from './native.js';

export type TdpoVariant = 'tdpo2' | 'tdpo1' | 'dpo';
export type TdpoImplementation = 'fused' | 'reference';

export interface TdpoLossInputs {
  /** Policy logits, [B, T, V] row-major. Read in place, not copied: do not modify during a call. */
  policyLogits: Float32Array;
  /** Reference-model logits, [B, T, V]. */
  referenceLogits: Float32Array;
  /**
   * [B, T]. logits[b, t, :] is scored against labels[b, t] (already aligned: no shift inside);
   * -100 marks a position that is not scored (prompt, padding).
   */
  labels: Int32Array;
  /** [B, T, V] with B even: rows 0..B/2-1 are chosen, B/2..B-1 rejected; pair i = rows i, i+B/2. */
  shape: readonly [number, number, number];
}

export interface TdpoLossOptions {
  /** 'tdpo2' (default), 'tdpo1' or 'dpo'. */
  variant?: TdpoVariant;
  /** Strength of the KL penalty; > 0. Default 0.1 (the paper's). */
  beta?: number;
  /** TDPO2's weight on the rejected side's sequential KL. Default 0.5 (the paper's). */
  alpha?: number;
  /** 'fused' (default): the single-pass kernel; 'reference': the plain libtorch composition. */
  implementation?: TdpoImplementation;
  /** Also return d loss / d policyLogits. Default false. */
  grad?: boolean;
}

export interface TdpoLossResult {
  /** Mean of `losses`. */
  loss: number;
  /** Per pair: -log sigmoid(beta * logit). Each field below has length B/2. */
  losses: Float32Array;
  /** beta * (chosenLogratio + chosenKl) for TDPO, beta * chosenLogratio for DPO. */
  chosenRewards: Float32Array;
  rejectedRewards: Float32Array;
  /** Sum over scored tokens of log pi(y_t) - log pi_ref(y_t). */
  chosenLogratio: Float32Array;
  rejectedLogratio: Float32Array;
  /** Sequential KL: sum over scored tokens of KL(pi_ref(.|t) || pi(.|t)) over the vocabulary. */
  chosenKl: Float32Array;
  rejectedKl: Float32Array;
  /** Sum over scored tokens of log pi(y_t): the policy's own sequence log-prob. */
  chosenLogps: Float32Array;
  rejectedLogps: Float32Array;
  /** d loss / d policyLogits, [B, T, V], when `grad: true`. */
  grad?: Float32Array;
}

/**
 * Computes the loss on the calling thread. Errors are thrown as TypeError / RangeError with a
 * `code` (ERR_TDPO_TYPE, ERR_TDPO_SHAPE, ERR_TDPO_LABEL, ERR_TDPO_LOGITS, ERR_TDPO_OPTION).
 */
export function tdpoLossSync(inputs: TdpoLossInputs, options: TdpoLossOptions = {}): TdpoLossResult {
  return native.tdpoLossSync(inputs, options);
}

/**
 * Computes the loss on a worker thread; the event loop stays free. The input arrays are pinned and
 * read in place until the promise settles. Rejects with the same errors as tdpoLossSync.
 */
export async function tdpoLoss(
  inputs: TdpoLossInputs,
  options: TdpoLossOptions = {},
): Promise<TdpoLossResult> {
  return native.tdpoLoss(inputs, options);
}
