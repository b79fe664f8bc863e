// Every type that crosses the native boundary, at the bottom of the library: lib/native.ts and
// the wrappers above it import from here, and nothing here imports from them.

/** How a model computes attention (transformers' attn_implementation): 'eager', ATen ops with a float32 softmax over the whole score tensor; 'sdpa', libtorch's scaled_dot_product_attention (libtorch >= 2.3). */
export type AttnImplementation = 'eager' | 'sdpa';

/** Options as the binding receives them: complete (lib/options.ts resolved them), no defaults. */
export interface NativeLossOptions {
  variant: string;
  beta: number;
  alpha: number;
  implementation: string;
  grad: boolean;
  entropy: boolean;
}
export interface NativeStepOptions {
  loss: string;
  beta: number;
  alpha: number;
  optimizer: string;
  weightDecay: number;
  fusedLinear: boolean;
  chunkMb: number;
  gradientCheckpointing: boolean;
}
export interface NativeSamplingOptions {
  maxNewTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  useCache: boolean;
  eosTokenId: number | readonly number[] | undefined;
}

// The two label conventions, one per API, named so that a signature says which it takes. Only the
// native code shifts: the train step (src/train) turns InputLabels into aligned ones internally.

/**
 * Labels aligned with the logits: labels[b, t] is the token that logits[b, t, :] score (the next
 * token after position t); -100 where nothing is scored. Taken by the loss and sequenceLogprobs.
 */
export type AlignedLabels = Int32Array;
/**
 * Labels as the input rows: labels[b, t] is inputIds[b, t] where that token is a target, -100
 * elsewhere (prompt, padding); the train step scores it with the logits at [b, t - 1], so
 * labels[b, 0] is never scored. Taken by training batches (TrainBatch, collatePairs' output).
 */
export type InputLabels = Int32Array;

export interface TdpoLossInputs {
  /** Policy logits, [B, T, V] row-major. What is read in place and what is copied: README, "The buffer contract". */
  policyLogits: Float32Array;
  /** Reference-model logits, [B, T, V]. */
  referenceLogits: Float32Array;
  /**
   * [B, T]. logits[b, t, :] is scored against labels[b, t] (already aligned: no shift inside);
   * -100 marks a position that is not scored (prompt, padding).
   */
  labels: AlignedLabels;
  /** [B, T, V] with B even: rows 0..B/2-1 are chosen, B/2..B-1 rejected; pair i = rows i, i+B/2. */
  shape: readonly [number, number, number];
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
  /**
   * With `entropy: true`: the sum over scored tokens of the policy's entropy H(pi(.|t)) over the
   * vocabulary. Divided by the scored tokens, how spread its next-token distributions are (a
   * statistic; no gradient).
   */
  chosenEntropy?: Float32Array;
  rejectedEntropy?: Float32Array;
  /** d loss / d policyLogits, [B, T, V], when `grad: true`. */
  grad?: Float32Array;
}

export interface GenerateOptions {
  /** New tokens per prompt at most. Default 32. */
  maxNewTokens?: number;
  /** 0 = greedy. Default 1. */
  temperature?: number;
  /** Nucleus sampling: keep the smallest set of tokens with probability >= topP. Default 1. */
  topP?: number;
  /** Keep only the k most likely tokens; 0 = all. Default 0. */
  topK?: number;
  /** Same seed, same tokens. Default 0. */
  seed?: number;
  /**
   * A row stops after emitting this token, or any of these (transformers' eos_token_id may be a
   * list; `model.stopTokenIds` is the model's own), which is included in its output.
   */
  eosTokenId?: number | readonly number[];
  /** Reuse keys and values across steps (default); false re-runs the whole sequence per token. */
  useCache?: boolean;
}

export interface SequenceLogprobs {
  /** [B, T]: log p(labels[b, t]) from the logits at [b, t]; 0 where the label is -100. */
  tokenLogprobs: Float32Array;
  /** [B]: the sum of each row's token log-probs. */
  sums: Float32Array;
  /** [B, T]: the entropy (nats) of the distribution at [b, t]; 0 where the label is -100. */
  tokenEntropies: Float32Array;
}

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16';

export interface TensorSource {
  name: string;
  file: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute byte offset of the data in `file`. */
  offset: number;
  bytes: number;
}

export interface NativeModelConfig {
  modelType: 'gpt2' | 'gpt_neox' | 'llama';
  vocabSize: number;
  maxPositions: number;
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
  layerNormEps: number;
  rotaryPct?: number;
  rotaryBase?: number;
  parallelResidual?: boolean;
  // Llama family (also Qwen2, Mistral).
  kvHeads?: number;
  /** 0: hidden / heads. */
  headDim?: number;
  tieEmbeddings?: boolean;
  qkvBias?: boolean;
  oBias?: boolean;
  mlpBias?: boolean;
  ropeType?: 'default' | 'linear' | 'llama3';
  ropeFactor?: number;
  ropeLowFreqFactor?: number;
  ropeHighFreqFactor?: number;
  ropeOriginalMaxPositions?: number;
  /** 0: none; otherwise longer sequences are refused (the window is not implemented). */
  slidingWindow?: number;
}

export interface BuildInfo {
  /** libtorch version the addon was compiled against, e.g. "1.13.0". */
  torchVersion: string;
  /** Whether libtorch sees a CUDA device. */
  cuda: boolean;
  /** How many CUDA devices libtorch sees ('cuda:0' … 'cuda:N-1'). */
  cudaDevices: number;
  /** Intra-op threads used by default: the CPUs this process may run on. */
  defaultThreads: number;
  /**
   * OpenBLAS's thread count now, which setNumThreads keeps equal to the intra-op count (ATen alone
   * leaves OpenBLAS on every core); -1 where libtorch's BLAS is not OpenBLAS (MKL follows libtorch).
   */
  blasThreads: number;
  /** c10d backends for distributed training: 'gloo' (CPU tensors) and, in a CUDA build with NCCL's headers, 'nccl' (CUDA tensors); [] in a build with neither. */
  distributedBackends: string[];
  /** The fused loss kernel's instruction set on this CPU: 'avx512', 'avx2', 'sse2' or 'generic'. */
  kernelIsa: string;
  /**
   * The train step's loss math on the CPU: 'kernel' (the SIMD rows), or 'aten' (libtorch ops, what
   * CUDA runs, for the fused linear rows and the materialised composition) when
   * TDPO_FUSED_LINEAR_ROWS=aten was set at load (for tests).
   */
  fusedLinearRows: 'kernel' | 'aten';
  /** The attention kernels this build has (a model's attnImplementation): 'eager' always, 'sdpa' from libtorch 2.3. */
  attnImplementations: AttnImplementation[];
  /**
   * 'when-needed': the train step leaves out the key mask of a batch whose padding is trailing and
   * unlabelled (it changes nothing the step reads, and SDPA then takes its causal kernel);
   * 'always': TDPO_KEY_MASK=always was set at load (for tests).
   */
  trainKeyMask: 'when-needed' | 'always';
}

export interface NativeModelHandle {
  forward(
    ids: Int32Array,
    shape: readonly [number, number],
    attentionMask?: Int32Array,
  ): Promise<{ logits: Float32Array; shape: [number, number, number] }>;
  save(file: string): Promise<void>;
  generate(prompts: Int32Array[], options: NativeSamplingOptions): Promise<Int32Array[]>;
  sequenceLogprobs(
    ids: Int32Array,
    shape: readonly [number, number],
    labels: AlignedLabels,
    attentionMask?: Int32Array,
  ): Promise<SequenceLogprobs>;
  dispose(): void;
  parameterCount(): number;
}

export interface NativeBatch {
  inputIds: Int32Array;
  /** Unshifted: see InputLabels. */
  labels: InputLabels;
  attentionMask?: Int32Array;
  shape: readonly [number, number];
}

export interface MicroStats {
  loss: number;
  /** Scored tokens (SFT). */
  tokens: number;
  chosenRewards: Float32Array;
  rejectedRewards: Float32Array;
  chosenKl: Float32Array;
  rejectedKl: Float32Array;
  chosenLogps: Float32Array;
  rejectedLogps: Float32Array;
  /** Per pair: the sum over scored tokens of the policy's entropy (as the loss's result). */
  chosenEntropy: Float32Array;
  rejectedEntropy: Float32Array;
}

export interface NativeTrainerHandle {
  accumulate(batch: NativeBatch, options: { scale: number }): Promise<MicroStats>;
  evaluate(batch: NativeBatch): Promise<MicroStats>;
  apply(lr: number, maxGradNorm: number): Promise<number>;
  saveOptimizer(file: string): Promise<void>;
  loadOptimizer(file: string): Promise<void>;
  /** apply() sums the gradients over the group's ranks first; null: this process alone. */
  setProcessGroup(group: NativeProcessGroupHandle | null): void;
}

export interface NativeDistributedOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  timeoutMs: number;
  /** This rank's GPU index when the run is on CUDA: CPU values go through it on an NCCL-only build. */
  cudaDevice?: number;
}

/** A c10d process group (TCPStore rendezvous; Gloo for CPU tensors, NCCL for CUDA tensors where built); src/distributed. */
export interface NativeProcessGroupHandle {
  /** A new array: `values` summed (or maxed) over every rank. */
  allreduce(values: Float64Array, op: 'sum' | 'max'): Promise<Float64Array>;
  /** Every rank's model gets root's parameters. */
  broadcastModel(model: NativeModelHandle, root: number): Promise<void>;
  /** Small messages through the rendezvous store. */
  send(key: string, value: string): Promise<void>;
  /** Waits for `key`; rejects at once when a rank has called abort(), with its message. */
  recv(key: string, timeoutMs: number): Promise<string>;
  abort(message: string): Promise<void>;
  close(): Promise<void>;
  /** The collectives so far: calls, bytes reduced or broadcast, milliseconds spent. */
  stats(): { calls: number; bytes: number; ms: number };
}

export interface NativeAddon {
  createProcessGroup(options: NativeDistributedOptions): Promise<NativeProcessGroupHandle>;
  createTrainer(
    policy: NativeModelHandle,
    reference: NativeModelHandle | null,
    options: NativeStepOptions,
  ): Promise<NativeTrainerHandle>;
  createModel(config: NativeModelConfig, options: { seed: number; dtype: string; device: string; attnImplementation: AttnImplementation }): Promise<NativeModelHandle>;
  loadModel(config: NativeModelConfig, tensors: TensorSource[], options: { dtype: string; device: string; attnImplementation: AttnImplementation }): Promise<NativeModelHandle>;
  tdpoLossSync(inputs: TdpoLossInputs, options: NativeLossOptions): TdpoLossResult;
  tdpoLoss(inputs: TdpoLossInputs, options: NativeLossOptions): Promise<TdpoLossResult>;
  lossFloat64ForTest(inputs: unknown, options: NativeLossOptions): TdpoLossResult;
  /** src/loss's checks of (variant, beta, alpha); messages name each field as prefix + name. */
  checkLossOptions(options: { variant: string; beta: number; alpha: number }, prefix: string): void;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  releaseCachedMemory(): number;
  cudaPeakBytes(index: number, reset: boolean): number;
  buildInfo(): BuildInfo;
}

