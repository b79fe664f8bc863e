// Model: a GPT-2 or GPT-NeoX causal LM held natively (src/models), loaded from and saved to
// Hugging Face folders (config.json + model.safetensors, or a sharded index).
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { codedError } from './errors.js';
import { readSafetensorsHeader } from './io/safetensors.js';
import { toNativeConfig, type HfConfig } from './models/config.js';
import { native, type AlignedLabels, type GenerateOptions, type NativeModelHandle, type SequenceLogprobs, type TensorSource } from './native.js';
import { defaults, resolveOptions, type ModelDevice, type ModelDtype } from './options.js';

export type { GenerateOptions, ModelDevice, ModelDtype, SequenceLogprobs };
export interface ModelOptions {
  /** Parameter and compute precision; logits are returned as float32 either way. */
  dtype?: ModelDtype;
  /** 'cpu' (default), or 'cuda' with a CUDA build of libtorch and a GPU (ERR_TDPO_OPTION otherwise). */
  device?: ModelDevice;
}
export interface ForwardResult {
  /** [B, T, V] row-major. */
  logits: Float32Array;
  shape: [number, number, number];
}



function readJson(file: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw codedError('Error', 'ERR_TDPO_CHECKPOINT', `cannot read ${what} ${file}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw codedError('RangeError', 'ERR_TDPO_CHECKPOINT', `${file} is not valid JSON: ${(err as Error).message}`);
  }
}

/** Every tensor of a checkpoint folder: model.safetensors, or the shards its index names. */
function checkpointTensors(dir: string): TensorSource[] {
  const single = path.join(dir, 'model.safetensors');
  const index = path.join(dir, 'model.safetensors.index.json');
  if (existsSync(single)) {
    if (!statSync(single).isFile()) throw codedError('Error', 'ERR_TDPO_CHECKPOINT', `${single} is not a file`);
    return readSafetensorsHeader(single);
  }
  if (!existsSync(index)) {
    throw codedError('Error', 'ERR_TDPO_CHECKPOINT', `${dir} has neither model.safetensors nor model.safetensors.index.json`);
  }
  const map = (readJson(index, 'the shard index') as { weight_map?: Record<string, string> }).weight_map;
  if (typeof map !== 'object' || map === null) {
    throw codedError('RangeError', 'ERR_TDPO_CHECKPOINT', `${index}: weight_map is missing`);
  }
  const out: TensorSource[] = [];
  for (const shard of [...new Set(Object.values(map))]) {
    if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\')) {
      throw codedError('RangeError', 'ERR_TDPO_CHECKPOINT', `${index}: shard name ${JSON.stringify(shard)} is not a file in ${dir}`);
    }
    for (const t of readSafetensorsHeader(path.join(dir, shard))) {
      if (map[t.name] !== shard) {
        throw codedError('RangeError', 'ERR_TDPO_CHECKPOINT', `${path.join(dir, shard)}: tensor '${t.name}' is not listed for this shard in ${index}`);
      }
      out.push(t);
    }
  }
  return out;
}

const savesInFlight = new Map<string, Promise<void>>();
let tmpCounter = 0;

/** A temporary name unique to this call (pid, counter, random), then an atomic rename. */
function writeFileAtomically(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}-${tmpCounter++}-${randomBytes(4).toString('hex')}`;
  try {
    writeFileSync(tmp, text);
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw codedError('Error', 'ERR_TDPO_IO', `writing ${file}: ${(err as Error).message}`);
  }
}

// The native handle behind each Model, for the trainer (module-internal, not part of the API).
const handles = new WeakMap<Model, () => NativeModelHandle>();
export function nativeHandleOf(model: Model): NativeModelHandle {
  return handles.get(model)!();
}

export class Model {
  readonly config: HfConfig;
  /** generation_config.json, where the folder has one (null otherwise, and for created models). */
  readonly generationConfig: HfConfig | null;
  #handle: NativeModelHandle | null;

  private constructor(handle: NativeModelHandle, config: HfConfig, generationConfig: HfConfig | null = null) {
    this.#handle = handle;
    this.config = config;
    this.generationConfig = generationConfig;
    handles.set(this, () => this.#live());
  }

  /**
   * The ids generation stops at, as transformers' generate() takes them: generation_config.json's
   * eos_token_id (a list for Llama 3 Instruct), else config.json's; empty when neither says.
   */
  get stopTokenIds(): number[] {
    const v = this.generationConfig?.eos_token_id ?? this.config.eos_token_id;
    const ids = Array.isArray(v) ? v : [v];
    return ids.filter((x): x is number => Number.isSafeInteger(x) && (x as number) >= 0);
  }

  /** Loads a Hugging Face folder: config.json and model.safetensors (or a sharded index). */
  static async load(dir: string, options: ModelOptions = {}): Promise<Model> {
    const config = readJson(path.join(dir, 'config.json'), 'the model config') as HfConfig;
    const { dtype, device } = resolveOptions(defaults.model, { ...options, seed: undefined }, 'options');
    const genFile = path.join(dir, 'generation_config.json');
    const generation = existsSync(genFile) ? (readJson(genFile, 'the generation config') as HfConfig) : null;
    const handle = await native.loadModel(toNativeConfig(config), checkpointTensors(dir), { dtype, device });
    return new Model(handle, config, generation);
  }

  /** A randomly initialised model (Hugging Face's initialisation), deterministic in `seed`. */
  static async create(config: HfConfig, options: ModelOptions & { seed?: number } = {}): Promise<Model> {
    const handle = await native.createModel(toNativeConfig(config), resolveOptions(defaults.model, options, 'options'));
    return new Model(handle, { ...config });
  }

  /** Logits for `inputIds` ([B, T] row-major); `attentionMask` (1 = token, 0 = padding) masks keys. */
  async forward(inputIds: Int32Array, shape: readonly [number, number], options: { attentionMask?: Int32Array } = {}): Promise<ForwardResult> {
    return this.#live().forward(inputIds, shape, options.attentionMask);
  }

  /**
   * Per-token log-probs of `labels`, their sums per row, and the entropy of each scored position's
   * distribution, without returning the logits. Labels are aligned with the positions (logits at
   * [b, t] score labels[b, t], as in the loss); -100 is not scored.
   */
  async sequenceLogprobs(
    inputIds: Int32Array,
    shape: readonly [number, number],
    labels: AlignedLabels,
    options: { attentionMask?: Int32Array } = {},
  ): Promise<SequenceLogprobs> {
    return this.#live().sequenceLogprobs(inputIds, shape, labels, options.attentionMask);
  }

  /** Batched sampling with a key/value cache; each prompt may have its own length. */
  async generate(promptIds: Int32Array[], options: GenerateOptions = {}): Promise<Int32Array[]> {
    const handle = this.#live();
    return handle.generate(promptIds, resolveOptions(defaults.sampling, options, 'options'));
  }

  /**
   * Writes config.json and model.safetensors (and generation_config.json, when loaded with one),
   * each through a temporary file of its own and a rename. Saves to one folder from this process run one after another, so the folder always
   * holds one model's files, never a mix.
   */
  async save(dir: string): Promise<void> {
    const handle = this.#live();
    const key = path.resolve(dir);
    const previous = savesInFlight.get(key) ?? Promise.resolve();
    const mine = previous.catch(() => {}).then(async () => {
      try {
        mkdirSync(dir, { recursive: true });
      } catch (err) {
        throw codedError('Error', 'ERR_TDPO_IO', `cannot create ${dir}: ${(err as Error).message}`);
      }
      await handle.save(path.join(dir, 'model.safetensors'));
      writeFileAtomically(path.join(dir, 'config.json'), `${JSON.stringify(this.config, null, 2)}\n`);
      if (this.generationConfig) writeFileAtomically(path.join(dir, 'generation_config.json'), `${JSON.stringify(this.generationConfig, null, 2)}\n`);
    });
    savesInFlight.set(key, mine);
    try {
      await mine;
    } finally {
      if (savesInFlight.get(key) === mine) savesInFlight.delete(key);
    }
  }

  /** Number of parameters. */
  get parameterCount(): number {
    return this.#live().parameterCount();
  }

  /** Frees the native memory now (once running calls finish); later calls throw ERR_TDPO_DISPOSED. */
  dispose(): void {
    this.#handle?.dispose();
    this.#handle = null;
  }

  #live(): NativeModelHandle {
    if (this.#handle === null) throw codedError('Error', 'ERR_TDPO_DISPOSED', 'this model was disposed');
    return this.#handle;
  }
}
