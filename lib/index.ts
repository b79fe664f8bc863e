// The public surface of `tdpo`, and nothing else.
export { tdpoLoss, tdpoLossSync } from './loss.js';
export type {
  TdpoImplementation,
  TdpoLossInputs,
  TdpoLossOptions,
  TdpoLossResult,
  TdpoVariant,
} from './loss.js';
export { buildInfo, cudaPeakBytes, getNumThreads, releaseCachedMemory, setNumThreads } from './runtime.js';
export type { BuildInfo } from './runtime.js';
export { Model } from './model.js';
export type { ForwardResult, GenerateOptions, AttnImplementation, ModelDevice, ModelDtype, ModelOptions, SequenceLogprobs } from './model.js';
export { Tokenizer, type ChatMessage, type RenderOptions } from './tokenizer.js';
export { TrainStep } from './train/train-step.js';
export type { MicroStats, Objective, OptimizerName, TrainBatch, TrainStepOptions } from './train/train-step.js';
export { collatePairs, tokenizePair } from './data/tokenize.js';
export type { TokenizedPair, TruncationOptions } from './data/tokenize.js';
export { evaluate, train } from './train/trainer.js';
export type { TrainOptions, TrainResult } from './train/trainer.js';
export type { DistributedOptions } from './train/distributed.js';
export type { Metrics } from './train/metrics.js';
export type { AlignedLabels, InputLabels } from './native-types.js';
export { defaultConfig, loadConfig, validateConfig } from './config.js';
export { chunkMbOn } from './options.js';
export type { ConfigInput, TrainConfig } from './config.js';
