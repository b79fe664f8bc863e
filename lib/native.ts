// Loads the native addon (prebuilt or locally built) once, at import, and turns a failed load into
// an error that says what is missing and the command that fixes it.
import { createRequire } from 'node:module';
import path from 'node:path';
import packageRoot from './package-root.cjs';
import type { TensorSource } from './io/safetensors.js';
import type { TdpoLossInputs, TdpoLossOptions, TdpoLossResult } from './loss.js';
import type { GenerateOptions, SequenceLogprobs } from './model.js';
import type { NativeModelConfig } from './models/config.js';

export interface BuildInfo {
  /** libtorch version the addon was compiled against, e.g. "1.13.0". */
  torchVersion: string;
  /** Whether libtorch sees a CUDA device. */
  cuda: boolean;
  /** Intra-op threads used by default: the CPUs this process may run on. */
  defaultThreads: number;
}

export interface NativeModelHandle {
  forward(
    ids: Int32Array,
    shape: readonly [number, number],
    attentionMask?: Int32Array,
  ): Promise<{ logits: Float32Array; shape: [number, number, number] }>;
  save(file: string): Promise<void>;
  generate(prompts: Int32Array[], options: GenerateOptions): Promise<Int32Array[]>;
  sequenceLogprobs(
    ids: Int32Array,
    shape: readonly [number, number],
    labels: Int32Array,
    attentionMask?: Int32Array,
  ): Promise<SequenceLogprobs>;
  dispose(): void;
  parameterCount(): number;
}

export interface NativeBatch {
  inputIds: Int32Array;
  labels: Int32Array;
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
}

export interface NativeTrainerHandle {
  accumulate(batch: NativeBatch, options: { scale: number }): Promise<MicroStats>;
  evaluate(batch: NativeBatch): Promise<MicroStats>;
  apply(lr: number, maxGradNorm: number): Promise<number>;
  saveOptimizer(file: string): Promise<void>;
  loadOptimizer(file: string): Promise<void>;
}

export interface NativeAddon {
  createTrainer(
    policy: NativeModelHandle,
    reference: NativeModelHandle | null,
    options: { loss: string; beta: number; alpha: number; optimizer: string; weightDecay: number },
  ): Promise<NativeTrainerHandle>;
  createModel(config: NativeModelConfig, options: { seed?: number; dtype?: string; device?: string }): Promise<NativeModelHandle>;
  loadModel(config: NativeModelConfig, tensors: TensorSource[], options: { dtype?: string; device?: string }): Promise<NativeModelHandle>;
  tdpoLossSync(inputs: TdpoLossInputs, options?: TdpoLossOptions): TdpoLossResult;
  tdpoLoss(inputs: TdpoLossInputs, options?: TdpoLossOptions): Promise<TdpoLossResult>;
  lossFloat64ForTest(inputs: unknown, options?: TdpoLossOptions): TdpoLossResult;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  releaseCachedMemory(): number;
  buildInfo(): BuildInfo;
}

const APT_FIX = 'sudo apt-get install -y libtorch-dev libopenblas0-pthread';

/** Why the binary did not load, and what to run; exported for tests. */
export function explainLoadFailure(err: unknown): Error {
  const message = err instanceof Error ? err.message : String(err);
  let advice: string;
  const missingLib = /(lib[\w.+-]+\.so[\w.]*): cannot open shared object file/.exec(message);
  if (missingLib) {
    const lib = missingLib[1];
    advice = /torch|c10/.test(lib)
      ? `libtorch is not installed (${lib} was not found). On Debian 12: ${APT_FIX}\n` +
        `To use your own libtorch (e.g. a CUDA build of PyTorch 2.x), rebuild against it: ` +
        `TDPO_TORCH_DIR=/path/to/libtorch/share/cmake/Torch npm rebuild tdpo`
      : `the shared library ${lib} is missing. On Debian 12: ${APT_FIX}`;
  } else if (/undefined symbol|version `[^']+' not found/.test(message)) {
    advice =
      'the installed libtorch is not the one this binary was built against. Rebuild it from ' +
      'source against your libtorch: npm rebuild tdpo (set TDPO_TORCH_DIR for a custom libtorch)';
  } else if (/No native build was found/.test(message)) {
    advice =
      `no prebuilt binary fits ${process.platform}-${process.arch} and none was built. Build it ` +
      `(needs cmake, g++ and libtorch): ${APT_FIX} cmake g++ && npm rebuild tdpo`;
  } else {
    advice = `rebuild it from source: ${APT_FIX} cmake g++ && npm rebuild tdpo`;
  }
  const out = new Error(`tdpo: the native addon could not be loaded: ${advice}\n(${message})`, {
    cause: err,
  });
  (out as Error & { code: string }).code = 'ERR_TDPO_LOAD';
  return out;
}

function load(): NativeAddon {
  const require = createRequire(path.join(packageRoot, 'package.json'));
  try {
    const nodeGypBuild = require('node-gyp-build') as (dir: string) => NativeAddon;
    return nodeGypBuild(packageRoot);
  } catch (err) {
    throw explainLoadFailure(err);
  }
}

export const native: NativeAddon = load();
