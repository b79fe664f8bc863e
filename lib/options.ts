// Every option that reaches native code, defined once: its name and default here, its check in
// src/ (C++; the config validation calls the same check through checkLossOptions). The wrappers
// (tdpoLoss, TrainStep, Model) resolve a caller's options against these rows and hand the binding
// complete objects: the binding carries no defaults. A new loss objective needs its name here and
// a row in src/loss/objective.{h,cc}.
import { codedError } from './errors.js';
import type { AttnImplementation } from './native-types.js';

export const OBJECTIVES = ['tdpo2', 'tdpo1', 'dpo', 'sft'] as const;
/** A training objective: the three preference losses, or SFT (to make a reference model). */
export type Objective = (typeof OBJECTIVES)[number];
/** The preference losses (what the loss API computes). */
export type TdpoVariant = Exclude<Objective, 'sft'>;
export const VARIANTS = OBJECTIVES.filter((o): o is TdpoVariant => o !== 'sft');
export const OPTIMIZERS = ['rmsprop', 'adamw', 'sgd'] as const;
export type OptimizerName = (typeof OPTIMIZERS)[number];
export type TdpoImplementation = 'fused' | 'reference';
export type ModelDtype = 'float32' | 'bfloat16';
export type ModelDevice = 'cpu' | 'cuda' | `cuda:${number}`;
export type { AttnImplementation };

/** The paper's values (Zeng et al. 2024; the official code's defaults). */
const paper = { variant: 'tdpo2' as TdpoVariant, beta: 0.1, alpha: 0.5, optimizer: 'rmsprop' as OptimizerName };

export const defaults = {
  loss: { variant: paper.variant, beta: paper.beta, alpha: paper.alpha, implementation: 'fused' as TdpoImplementation, grad: false, entropy: false },
  // fusedLinear: the loss from the final hidden states, a chunk of rows' logits at a time (never
  // [B, T, V]); chunkMb bounds those logits (policy + reference, float32), null: chunkMbOn's value
  // for the policy's device. gradientCheckpointing recomputes each block's forward in the backward pass.
  trainStep: { loss: paper.variant as Objective, beta: paper.beta, alpha: paper.alpha, optimizer: paper.optimizer, weightDecay: 0, fusedLinear: true, chunkMb: null as number | null, gradientCheckpointing: false },
  // attnImplementation null: 'sdpa' where this libtorch has it (buildInfo().attnImplementations), else 'eager'.
  model: { dtype: 'float32' as ModelDtype, device: 'cpu' as ModelDevice, seed: 0, attnImplementation: null as AttnImplementation | null },
  sampling: { maxNewTokens: 32, temperature: 1, topP: 1, topK: 0, seed: 0, useCache: true, eosTokenId: undefined as number | readonly number[] | undefined },
  // rank and worldSize have no default (the binding refuses them missing). The timeout bounds the
  // rendezvous and every collective: how long a rank waits for a peer that died or hangs.
  distributed: { rank: undefined as number | undefined, worldSize: undefined as number | undefined, masterAddr: '127.0.0.1', masterPort: 29500, timeoutMs: 30_000 },
} as const;

function nearest(key: string, names: string[]): string | undefined {
  const dist = (a: string, b: string) => {
    const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
    for (let j = 1; j <= b.length; j++) d[0][j] = j;
    for (let i = 1; i <= a.length; i++)
      for (let j = 1; j <= b.length; j++) d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    return d[a.length][b.length];
  };
  const best = names.reduce((a, b) => (dist(key, a) <= dist(key, b) ? a : b));
  return dist(key, best) <= Math.max(2, key.length / 3) ? best : undefined;
}

/**
 * The caller's options over the defaults, as a plain object (getters run here, once). Unknown keys
 * are refused (a misspelt option would otherwise be ignored); `undefined` takes the default.
 */
export function resolveOptions<T extends Record<string, unknown>>(rows: T, given: unknown, what: string): T {
  if (given === undefined || given === null) return { ...rows };
  if (typeof given !== 'object' || Array.isArray(given)) throw codedError('TypeError', 'ERR_TDPO_TYPE', `${what} must be an object`);
  const out: Record<string, unknown> = { ...rows };
  for (const [key, value] of Object.entries(given)) {
    if (!Object.hasOwn(rows, key)) {
      const hint = nearest(key, Object.keys(rows));
      throw codedError('TypeError', 'ERR_TDPO_OPTION', `${what}.${key} is not an option${hint ? ` (did you mean '${hint}'?)` : ''}`);
    }
    if (value !== undefined) out[key] = value;
  }
  return out as T;
}

/**
 * The fused linear's default chunk (MB of policy + reference float32 logits) on a device. The CPU:
 * 128, where a pair's logits were the step's memory peak and smaller chunks cost no time
 * (src/loss/fused_linear.h). CUDA: 1024. At the Pythia-1B shape, 8 pairs x T=512, bf16 on an H200
 * (scripts/device/check.sh), 128 MB chunks took 235 ms a step against 201 ms at 1024 MB and 199 ms
 * materialised: each of the many chunks' small kernels and host reads leaves the GPU waiting. 1024
 * MB kept 8.8 GB of the materialised step's 37.2 GB peak off (4096 MB: 203 ms, 1.7 GB).
 */
export const chunkMbOn = (device: ModelDevice): number => (device.startsWith('cuda') ? 1024 : 128);
