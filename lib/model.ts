// Model: a GPT-2 or GPT-NeoX causal LM held natively (src/models), loaded from and saved to
// Hugging Face folders (config.json + model.safetensors, or a sharded index).
import { checkRegularFile as checkFile, readTextFile } from './io/files.js';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { codedError } from './errors.js';
import { readSafetensorsHeader } from './io/safetensors.js';
import { toNativeConfig, type HfConfig } from './models/config.js';
import { native, type AlignedLabels, type GenerateOptions, type NativeModelHandle, type SequenceLogprobs, type TensorSource } from './native.js';
import { defaults, resolveOptions, type AttnImplementation, type ModelDevice, type ModelDtype } from './options.js';
import { defaultAttnImplementation } from './runtime.js';

export type { AttnImplementation, GenerateOptions, ModelDevice, ModelDtype, SequenceLogprobs };
export interface ModelOptions {
  /** Parameter and compute precision; logits are returned as float32 either way. */
  dtype?: ModelDtype;
  /** 'cpu' (default), or 'cuda' with a CUDA build of libtorch and a GPU (ERR_TDPO_OPTION otherwise). */
  device?: ModelDevice;
  /**
   * How attention is computed, as transformers' attn_implementation: 'sdpa' (libtorch's
   * scaled_dot_product_attention, which picks a fused kernel where one fits) or 'eager' (ATen
   * ops, softmax in float32 over the whole [B, H, T, T] scores). Default: 'sdpa' where this build
   * has it (libtorch 2.3 and later: buildInfo().attnImplementations), else 'eager'. Both compute
   * the same function to float rounding on every query that has a key to attend to; 'sdpa'
   * without it is ERR_TDPO_OPTION.
   */
  attnImplementation?: AttnImplementation;
}
export interface ForwardResult {
  /** [B, T, V] row-major. */
  logits: Float32Array;
  shape: [number, number, number];
}



/**
 * Throws ERR_TDPO_CHECKPOINT unless `file` is a regular file: a FIFO (or a device) would block the
 * event loop in a synchronous read.
 */
const checkRegularFile = (file: string, what: string) => checkFile(file, 'ERR_TDPO_CHECKPOINT', what);

function readJson(file: string, what: string): unknown {
  const text = readTextFile(file, 'ERR_TDPO_CHECKPOINT', what);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw codedError('RangeError', 'ERR_TDPO_CHECKPOINT', `${file} is not valid JSON: ${(err as Error).message}`);
  }
}

/** readJson for a file that must hold a JSON object (a `null` there is no config). */
function readJsonObject(file: string, what: string): Record<string, unknown> {
  const v = readJson(file, what);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw codedError('RangeError', 'ERR_TDPO_CHECKPOINT', `${file} must hold a JSON object (${what}), got ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v}`);
  }
  return v as Record<string, unknown>;
}

/** Every tensor of a checkpoint folder: model.safetensors, or the shards its index names. */
function checkpointTensors(dir: string): TensorSource[] {
  const single = path.join(dir, 'model.safetensors');
  const index = path.join(dir, 'model.safetensors.index.json');
  if (existsSync(single)) {
    checkRegularFile(single, 'the weights');
    return readSafetensorsHeader(single);
  }
  if (!existsSync(index)) {
    throw codedError('Error', 'ERR_TDPO_CHECKPOINT', `${dir} has neither model.safetensors nor model.safetensors.index.json`);
  }
  const map = (readJsonObject(index, 'the shard index') as { weight_map?: Record<string, string> }).weight_map;
  if (typeof map !== 'object' || map === null) {
    throw codedError('RangeError', 'ERR_TDPO_CHECKPOINT', `${index}: weight_map is missing`);
  }
  const out: TensorSource[] = [];
  for (const shard of [...new Set(Object.values(map))]) {
    if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\')) {
      throw codedError('RangeError', 'ERR_TDPO_CHECKPOINT', `${index}: shard name ${JSON.stringify(shard)} is not a file in ${dir}`);
    }
    checkRegularFile(path.join(dir, shard), 'the shard');
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

/**
 * Writes `text` to a temporary name next to `file`, unique to this call (pid, counter, random),
 * and returns that name for the caller to rename once the rest of the save has succeeded.
 */
function stageFile(file: string, text: string): string {
  const tmp = `${file}.tmp-${process.pid}-${tmpCounter++}-${randomBytes(4).toString('hex')}`;
  let fd: number | null = null;
  try {
    fd = openSync(tmp, 'w');
    writeFileSync(fd, text);
    fsyncSync(fd); // as the weights are (src/io/atomic_file.cc): renamed, it is on disk
  } catch (err) {
    rmSync(tmp, { force: true });
    throw codedError('Error', 'ERR_TDPO_IO', `writing ${file}: ${(err as Error).message}`);
  } finally {
    if (fd !== null) closeSync(fd);
  }
  return tmp;
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
  /** Where the weights live, as given to load() or create(). */
  readonly device: ModelDevice;
  /** The attention kernel its forward passes use (ModelOptions.attnImplementation, resolved). */
  readonly attnImplementation: AttnImplementation;
  #handle: NativeModelHandle | null;
  /** Saves begun and not yet finished: dispose() lets them finish first. */
  readonly #saves = new Set<Promise<void>>();

  private constructor(handle: NativeModelHandle, device: ModelDevice, attnImplementation: AttnImplementation, config: HfConfig, generationConfig: HfConfig | null = null) {
    this.#handle = handle;
    this.device = device;
    this.attnImplementation = attnImplementation;
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
    if (typeof dir !== 'string') throw codedError('TypeError', 'ERR_TDPO_TYPE', `dir must be a string, got ${typeof dir}`);
    const config = readJsonObject(path.join(dir, 'config.json'), 'the model config') as HfConfig;
    const resolved = resolveOptions(defaults.model, { ...options, seed: undefined }, 'options');
    const { dtype, device } = resolved;
    const attnImplementation = resolved.attnImplementation ?? defaultAttnImplementation();
    const genFile = path.join(dir, 'generation_config.json');
    const generation = existsSync(genFile) ? (readJsonObject(genFile, 'the generation config') as HfConfig) : null;
    const handle = await native.loadModel(toNativeConfig(config), checkpointTensors(dir), { dtype, device, attnImplementation });
    return new Model(handle, device, attnImplementation, config, generation);
  }

  /** A randomly initialised model (Hugging Face's initialisation), deterministic in `seed`. */
  static async create(config: HfConfig, options: ModelOptions & { seed?: number } = {}): Promise<Model> {
    // A deep copy as JSON, taken now: save() writes exactly this, and it must be writable (a
    // BigInt or a cycle is refused here, not after the weights were written).
    let snapshot: HfConfig;
    try {
      snapshot = JSON.parse(JSON.stringify(config)) as HfConfig;
    } catch (err) {
      throw codedError('TypeError', 'ERR_TDPO_CONFIG', `config must be JSON data, as config.json holds: ${(err as Error).message}`);
    }
    const resolved = resolveOptions(defaults.model, options, 'options');
    const attnImplementation = resolved.attnImplementation ?? defaultAttnImplementation();
    const handle = await native.createModel(toNativeConfig(config), { ...resolved, attnImplementation });
    return new Model(handle, resolved.device, attnImplementation, snapshot);
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
   * Writes config.json and model.safetensors (and generation_config.json when loaded with one;
   * otherwise a generation_config.json already in the folder, another model's, is removed). Each
   * file goes through a temporary file of its own and a rename, and the config files are written
   * before the weights are replaced: a failure up to then (a config.json that is a folder, a full
   * disk) leaves the folder's previous model whole; only the renames come after. Saves to
   * one folder from this process run one after another, so the folder always holds one model's
   * files, never a mix. A save that has begun finishes even if the model is disposed meanwhile.
   */
  async save(dir: string): Promise<void> {
    if (typeof dir !== 'string') throw codedError('TypeError', 'ERR_TDPO_TYPE', `dir must be a string, got ${typeof dir}`);
    const handle = this.#live();
    const texts: Array<[string, string | null]> = [
      ['config.json', `${JSON.stringify(this.config, null, 2)}\n`],
      ['generation_config.json', this.generationConfig ? `${JSON.stringify(this.generationConfig, null, 2)}\n` : null],
    ];
    const key = path.resolve(dir);
    const previous = savesInFlight.get(key) ?? Promise.resolve();
    const mine = previous.catch(() => {}).then(async () => {
      try {
        mkdirSync(dir, { recursive: true });
      } catch (err) {
        throw codedError('Error', 'ERR_TDPO_IO', `cannot create ${dir}: ${(err as Error).message}`);
      }
      for (const [name] of texts) {
        const file = path.join(dir, name);
        if (existsSync(file) && !statSync(file).isFile()) throw codedError('Error', 'ERR_TDPO_IO', `cannot write ${file}: it is not a file`);
      }
      const staged: Array<[string, string]> = [];
      try {
        for (const [name, text] of texts) if (text !== null) staged.push([path.join(dir, name), stageFile(path.join(dir, name), text)]);
        await handle.save(path.join(dir, 'model.safetensors'));
        for (const [file, tmp] of staged) renameSync(tmp, file);
        for (const [name, text] of texts) if (text === null) rmSync(path.join(dir, name), { force: true });
      } catch (err) {
        for (const [, tmp] of staged) rmSync(tmp, { force: true });
        // Staging and the native save throw coded errors; a rename or removal, Node's own.
        throw (err as { code?: string }).code?.startsWith('ERR_TDPO_') ? err : codedError('Error', 'ERR_TDPO_IO', `saving to ${dir}: ${(err as Error).message}`);
      }
    });
    this.#saves.add(mine);
    savesInFlight.set(key, mine);
    try {
      await mine;
    } finally {
      this.#saves.delete(mine);
      if (savesInFlight.get(key) === mine) savesInFlight.delete(key);
    }
  }

  /** Number of parameters. */
  get parameterCount(): number {
    return this.#live().parameterCount();
  }

  /**
   * Frees the native memory now (once running calls and saves finish); later calls throw
   * ERR_TDPO_DISPOSED.
   */
  dispose(): void {
    const handle = this.#handle;
    this.#handle = null;
    if (!handle) return;
    if (this.#saves.size === 0) handle.dispose();
    else
      void Promise.allSettled([...this.#saves]).then(() => {
        try {
          handle.dispose();
        } catch {
          // nothing to report to: the caller's dispose() returned long ago
        }
      });
  }

  #live(): NativeModelHandle {
    if (this.#handle === null) throw codedError('Error', 'ERR_TDPO_DISPOSED', 'this model was disposed');
    return this.#handle;
  }
}
