// The TDPO / DPO preference loss over logits: the public, typed face of src/loss (C++).
import { native, type NativeLossOptions, type TdpoLossInputs, type TdpoLossResult } from './native.js';
import { defaults, resolveOptions, type TdpoImplementation, type TdpoVariant } from './options.js';

export type { TdpoImplementation, TdpoLossInputs, TdpoLossResult, TdpoVariant };

export interface TdpoLossOptions {
  /** 'tdpo2' (default), 'tdpo1' or 'dpo'. Defaults: lib/options.ts. */
  variant?: TdpoVariant;
  /** Strength of the KL penalty, in [1e-6, 1e6]. Default 0.1 (the paper's). */
  beta?: number;
  /** TDPO2's weight on the rejected side's sequential KL. Default 0.5 (the paper's). */
  alpha?: number;
  /** 'fused' (default): the single-pass kernel; 'reference': the plain libtorch composition. */
  implementation?: TdpoImplementation;
  /** Also return d loss / d policyLogits. Default false. */
  grad?: boolean;
  /**
   * Also return each sequence's policy entropy (chosenEntropy, rejectedEntropy). Default false: the
   * fused kernel computes it in its one pass at 2-3% more time, the reference composition with more
   * passes over [B, T, V].
   */
  entropy?: boolean;
}

/**
 * Computes the loss on the calling thread. Errors are thrown as TypeError / RangeError with a
 * `code` (ERR_TDPO_TYPE, ERR_TDPO_SHAPE, ERR_TDPO_LABEL, ERR_TDPO_LOGITS, ERR_TDPO_OPTION).
 */
export function tdpoLossSync(inputs: TdpoLossInputs, options: TdpoLossOptions = {}): TdpoLossResult {
  return native.tdpoLossSync(inputs, lossOptions(options));
}

/** The options as the binding takes them: every field, defaults from lib/options.ts. */
export function lossOptions(options: TdpoLossOptions | undefined): NativeLossOptions {
  return resolveOptions(defaults.loss, options, 'options');
}

/**
 * Computes the loss on a worker thread; the event loop stays free. Logits on a SharedArrayBuffer
 * or in memory tdpo returned are read in place, others copied at the call (README, "The buffer
 * contract"). Rejects with the same errors as tdpoLossSync.
 */
export async function tdpoLoss(
  inputs: TdpoLossInputs,
  options: TdpoLossOptions = {},
): Promise<TdpoLossResult> {
  return native.tdpoLoss(inputs, lossOptions(options));
}
