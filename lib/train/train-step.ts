// TrainStep: the native train step (src/train) for one policy model. The training loop decides
// what runs: which micro-batches, the learning rate of each update, when to evaluate and save.
import { type Model, nativeHandleOf } from '../model.js';
import { native, type MicroStats, type NativeBatch, type NativeProcessGroupHandle, type NativeTrainerHandle } from '../native.js';
import { chunkMbOn, defaults, resolveOptions, type Objective, type OptimizerName } from '../options.js';

export type { Objective, OptimizerName };

export interface TrainStepOptions {
  /** Default 'tdpo2'. 'sft' trains on the labelled tokens with the NLL (to make a reference). */
  loss?: Objective;
  beta?: number;
  alpha?: number;
  /** Default 'rmsprop' (PyTorch defaults: alpha 0.99, eps 1e-8), as the official code. */
  optimizer?: OptimizerName;
  weightDecay?: number;
  /**
   * Default true: the preference loss from the final hidden states and the output projection, the
   * logits of a chunk of rows at a time (src/loss/fused_linear.h); false materialises [B, T, V]
   * logits for the policy, the reference and the gradient. SFT always materialises.
   */
  fusedLinear?: boolean;
  /** With fusedLinear: the chunk's logits (policy + reference, float32) in MiB (fractions allowed). Default (undefined or null): the policy's device's, chunkMbOn(policy.device) (lib/options.ts says why). */
  chunkMb?: number | null;
  /** Default false: recompute each block's forward during backward (activation memory: one block plus the block inputs). */
  gradientCheckpointing?: boolean;
  /** The frozen reference; default: a copy of the policy as it is when the step is created. */
  reference?: Model;
}

export type { MicroStats, NativeBatch as TrainBatch };

export class TrainStep {
  readonly #native: NativeTrainerHandle;

  private constructor(handle: NativeTrainerHandle) {
    this.#native = handle;
  }

  static async create(policy: Model, options: TrainStepOptions = {}): Promise<TrainStep> {
    const { reference, ...rest } = options;
    const resolved = resolveOptions(defaults.trainStep, rest, 'options');
    const handle = await native.createTrainer(
      nativeHandleOf(policy),
      reference ? nativeHandleOf(reference) : null,
      { ...resolved, chunkMb: resolved.chunkMb ?? chunkMbOn(policy.device) },
    );
    return new TrainStep(handle);
  }

  /**
   * Forward and backward on one micro-batch; gradients add up until apply(). `scale` weighs this
   * micro-batch's loss (1 / micro-batches per update, for a mean over the whole batch).
   */
  accumulate(batch: NativeBatch, scale = 1): Promise<MicroStats> {
    return this.#native.accumulate(batch, { scale });
  }

  /** The same statistics, without gradients. */
  evaluate(batch: NativeBatch): Promise<MicroStats> {
    return this.#native.evaluate(batch);
  }

  /** Clips the gradient's global norm, updates with this learning rate; returns the norm before clipping. */
  apply(lr: number, maxGradNorm: number): Promise<number> {
    return this.#native.apply(lr, maxGradNorm);
  }

  saveOptimizer(file: string): Promise<void> {
    return this.#native.saveOptimizer(file);
  }

  loadOptimizer(file: string): Promise<void> {
    return this.#native.loadOptimizer(file);
  }

  /** Data-parallel: apply() first sums the gradients over the group's ranks (distributed.ts). */
  setProcessGroup(group: NativeProcessGroupHandle | null): void {
    this.#native.setProcessGroup(group);
  }
}
