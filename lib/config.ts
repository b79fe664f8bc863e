// Training configuration: plain data with defaults from the paper and the official TDPO code,
// read from YAML or JSON, overridden by `--set key=value`, validated against a schema whose
// errors name the key and suggest the nearest valid one.
import { readTextFile } from './io/files.js';
import { parse as parseYaml, parseDocument } from 'yaml';
import { codedError, showValue } from './errors.js';
import { native } from './native.js';
import { defaultAttnImplementation } from './runtime.js';
import { defaults, OBJECTIVES, OPTIMIZERS, type AttnImplementation, type ModelDevice, type ModelDtype, type Objective, type OptimizerName } from './options.js';

export interface TrainConfig {
  /** A Hugging Face folder, or an inline config.json object for a freshly initialised model. */
  model: string | Record<string, unknown>;
  /** A Hugging Face folder; null = a frozen copy of the starting policy. */
  reference: string | null;
  /** A tokenizer.json path, 'gpt2' (built in), or null = <model>/tokenizer.json. */
  tokenizer: string | null;
  data: {
    train: string;
    eval: string | null;
    /** pairs: {prompt, chosen, rejected}; hh: Anthropic HH {chosen, rejected}; tokenized: {prompt_ids, chosen_ids, rejected_ids}. */
    format: 'pairs' | 'hh' | 'tokenized' | 'conversation';
    /** Held out from `train` when `eval` is null: a count (>= 1) or a fraction (< 1). */
    eval_size: number;
    skip_invalid: boolean;
    drop_last: boolean;
    /**
     * Batches of pairs of similar length (as transformers' group_by_length): each epoch's order is
     * cut into batches by length, and the batches are shuffled. Less padding to compute; the
     * batch composition is less random.
     */
    group_by_length: boolean;
  };
  /**
   * fused_linear: the loss from the final hidden states, computing the logits of at most chunk_mb
   * (policy + reference, float32) at a time (null: the device's default, chunkMbOn in
   * options.ts); false materialises [B, T, V] logits (for comparison).
   */
  loss: { name: Objective; alpha: number; beta: number; fused_linear: boolean; chunk_mb: number | null };
  /** Recompute each transformer block's forward during the backward pass: less activation memory, more time. */
  gradient_checkpointing: boolean;
  batch_size: number;
  gradient_accumulation_steps: number;
  optimizer: OptimizerName;
  lr: number;
  warmup_steps: number;
  max_grad_norm: number;
  max_length: number;
  max_prompt_length: number;
  /** null = keep_end for HH (as the official code), keep_start otherwise. */
  truncation_mode: 'keep_start' | 'keep_end' | null;
  n_epochs: number;
  max_steps: number | null;
  seed: number;
  eval_every: number;
  /** At each evaluation, sample continuations of this many eval prompts from policy and reference into samples.jsonl. */
  samples: number;
  /** Tokens per sample. */
  sample_max_new_tokens: number;
  save_every: number;
  output_dir: string;
  threads: number | null;
  dtype: ModelDtype;
  /** 'cpu', 'cuda' (under torchrun or --nproc-per-node: cuda:LOCAL_RANK) or 'cuda:N'. */
  device: ModelDevice;
  /** 'sdpa' or 'eager' (ModelOptions.attnImplementation); null: 'sdpa' where this build has it (libtorch 2.3+). */
  attn_implementation: AttnImplementation | null;
}

export const defaultConfig: TrainConfig = {
  model: '',
  reference: null,
  tokenizer: null,
  data: { train: '', eval: null, format: 'pairs', eval_size: 256, skip_invalid: false, drop_last: true, group_by_length: false },
  loss: { name: defaults.trainStep.loss, alpha: defaults.trainStep.alpha, beta: defaults.trainStep.beta, fused_linear: defaults.trainStep.fusedLinear, chunk_mb: defaults.trainStep.chunkMb },
  gradient_checkpointing: defaults.trainStep.gradientCheckpointing,
  batch_size: 64,
  gradient_accumulation_steps: 1,
  optimizer: defaults.trainStep.optimizer,
  lr: 5e-6,
  warmup_steps: 150,
  max_grad_norm: 10,
  max_length: 512,
  max_prompt_length: 256,
  truncation_mode: null,
  n_epochs: 1,
  max_steps: null,
  seed: 0,
  eval_every: 0,
  samples: 0,
  sample_max_new_tokens: defaults.sampling.maxNewTokens,
  save_every: 0,
  output_dir: 'tdpo-output',
  threads: null,
  dtype: defaults.model.dtype,
  device: defaults.model.device,
  attn_implementation: defaults.model.attnImplementation,
};

export { showValue };

type Check = (v: unknown) => string | null; // an error message, or null when valid
const oneOf = (...xs: unknown[]): Check => (v) => (xs.includes(v) ? null : `must be one of ${xs.map((x) => showValue(x)).join(', ')}`);
const int = (min: number): Check => (v) => (Number.isSafeInteger(v) && (v as number) >= min ? null : `must be an integer >= ${min}`);
const num = (min: number, exclusive = false): Check => (v) =>
  typeof v === 'number' && Number.isFinite(v) && (exclusive ? v > min : v >= min) ? null : `must be a number ${exclusive ? '>' : '>='} ${min}`;
const isNumber: Check = (v) => (typeof v === 'number' ? null : 'must be a number');
const finite: Check = (v) => (typeof v === 'number' && Number.isFinite(v) ? null : 'must be a finite number');
const str: Check = (v) => (typeof v === 'string' && v.length > 0 ? null : 'must be a non-empty string');
const bool: Check = (v) => (typeof v === 'boolean' ? null : 'must be true or false');
const nullable = (c: Check): Check => (v) => (v === null ? null : c(v));

const schema: Record<string, Check> = {
  model: (v) => (typeof v === 'string' && v.length > 0) || (typeof v === 'object' && v !== null && !Array.isArray(v)) ? null : 'must be a folder path or an inline config object',
  reference: nullable(str),
  tokenizer: nullable(str),
  'data.train': str,
  'data.eval': nullable(str),
  'data.format': oneOf('pairs', 'hh', 'tokenized', 'conversation'),
  'data.eval_size': num(0),
  'data.skip_invalid': bool,
  'data.drop_last': bool,
  'data.group_by_length': bool,
  'loss.name': oneOf(...OBJECTIVES),
  // Their values are checked by src/loss itself (checkLoss below), as the loss API checks them.
  'loss.alpha': isNumber,
  'loss.beta': isNumber,
  'loss.fused_linear': bool,
  'loss.chunk_mb': nullable(num(0, true)),
  gradient_checkpointing: bool,
  batch_size: int(1),
  gradient_accumulation_steps: int(1),
  optimizer: oneOf(...OPTIMIZERS),
  // libtorch keeps the learning rate as a float: 1e300 failed inside the first step.
  lr: (v) => num(0)(v) ?? ((v as number) <= 1e6 ? null : 'must be a number >= 0 and at most 1e6'),
  warmup_steps: int(0),
  max_grad_norm: num(0),
  max_length: int(2),
  max_prompt_length: int(1),
  truncation_mode: nullable(oneOf('keep_start', 'keep_end')),
  n_epochs: int(1),
  max_steps: nullable(int(1)),
  seed: int(0),
  eval_every: int(0),
  samples: int(0),
  sample_max_new_tokens: int(1),
  save_every: int(0),
  output_dir: str,
  threads: nullable(int(1)),
  dtype: oneOf('float32', 'bfloat16'),
  device: (v) => (typeof v === 'string' && /^(cpu|cuda|cuda:\d{1,3})$/.test(v) ? null : "must be 'cpu', 'cuda' or 'cuda:N'"),
  // Checked here against the build too, so that a run under a launcher stops before its rendezvous.
  attn_implementation: (v) =>
    v === null || v === 'eager' || (v === 'sdpa' && defaultAttnImplementation() === 'sdpa')
      ? null
      : v === 'sdpa'
        ? `needs libtorch >= 2.3 for 'sdpa' (this build has ${native.buildInfo().torchVersion}: use 'eager' or null)`
        : "must be one of 'sdpa', 'eager', null",
};
const sections = new Set(['data', 'loss']);

const configError = (msg: string) => codedError('RangeError', 'ERR_TDPO_CONFIG', msg);

function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

function unknownKey(key: string, context = ''): Error {
  const candidates = [...Object.keys(schema), ...sections];
  const best = candidates.reduce((a, b) => (distance(key, a) <= distance(key, b) ? a : b));
  return configError(`${context}unknown config key '${key}'${distance(key, best) <= Math.max(2, key.length / 3) ? ` (did you mean '${best}'?)` : ''}`);
}

/** Keys that would reach an object's prototype instead of the config: refused wherever they appear. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
function checkKeySegment(segment: string, key: string): void {
  if (FORBIDDEN_KEYS.has(segment)) throw configError(`config key '${key}' is not allowed ('${segment}' is not a config key)`);
}

const isMapping = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Throws ERR_TDPO_CONFIG unless `key` names a config key, a section (data, loss) or a field of an
 * inline model mapping (model.n_embd); `context` prefixes the message (e.g. "allowChange: ").
 */
export function checkConfigKey(key: string, context = ''): void {
  for (const segment of key.split('.')) checkKeySegment(segment, key);
  if (key in schema || sections.has(key) || /^model\.[^.]+(\.[^.]+)*$/.test(key)) return;
  throw unknownKey(key, context);
}

function checkLoss(loss: TrainConfig['loss']): void {
  if (loss.name === 'sft') return;
  try {
    native.checkLossOptions({ variant: loss.name, beta: loss.beta, alpha: loss.alpha }, 'loss.');
  } catch (err) {
    throw configError((err as Error).message);
  }
}

/** Validates a complete config; throws ERR_TDPO_CONFIG naming the first bad key. */
export function validateConfig(c: TrainConfig): TrainConfig {
  if (!isMapping(c)) throw configError(`a config must be a mapping of keys to values, got ${showValue(c)}`);
  // Unknown keys first (a typo is the likelier mistake), then missing ones, then each value.
  const walk = (obj: Record<string, unknown>, prefix: string, checkValues: boolean) => {
    for (const [k, v] of Object.entries(obj)) {
      const key = prefix + k;
      checkKeySegment(k, key);
      if (sections.has(key)) {
        if (typeof v !== 'object' || v === null || Array.isArray(v)) throw configError(`${key} must be a mapping`);
        walk(v as Record<string, unknown>, `${key}.`, checkValues);
        continue;
      }
      const check = schema[key];
      if (!check) throw unknownKey(key);
      const err = checkValues ? check(v) : null;
      if (err) throw configError(`${key} ${err}, got ${showValue(v)}`);
    }
  };
  walk(c as unknown as Record<string, unknown>, '', false);
  // loadConfig fills in every default; an object made by hand may lack some.
  for (const key of Object.keys(schema)) {
    const value = key.split('.').reduce<unknown>((o, k) => (isMapping(o) ? o[k] : undefined), c);
    if (value === undefined) throw configError(`${key} is missing (start from defaultConfig, or use loadConfig, which fills in the defaults)`);
  }
  walk(c as unknown as Record<string, unknown>, '', true);
  checkLoss(c.loss);
  if (c.batch_size % c.gradient_accumulation_steps !== 0) {
    throw configError(`batch_size (${c.batch_size}) must be a multiple of gradient_accumulation_steps (${c.gradient_accumulation_steps})`);
  }
  if (c.max_prompt_length >= c.max_length) throw configError(`max_prompt_length must be < max_length`);
  return c;
}

/** `over` on top of `base`; the sections (data, loss) merge key by key, anything else is replaced. */
function merge(base: Record<string, unknown>, over: Record<string, unknown>, prefix = ''): Record<string, unknown> {
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const key = prefix + k;
    checkKeySegment(k, key);
    if (sections.has(key) && isMapping(v)) {
      out[k] = merge((base[k] ?? {}) as Record<string, unknown>, v, `${key}.`);
    } else {
      out[k] = v;
    }
  }
  return out;
}

/** `key=value` split into the key's path and the value (a YAML scalar: numbers, booleans, null, strings). */
function splitOverride(text: string): { keys: string[]; value: unknown } {
  const eq = text.indexOf('=');
  if (eq <= 0) throw configError(`--set expects key=value, got '${text}'`);
  const key = text.slice(0, eq).trim();
  const keys = key.split('.');
  if (keys.some((k) => k === '')) throw configError(`--set ${key}: empty key segment`);
  for (const k of keys) checkKeySegment(k, key);
  let value: unknown;
  try {
    value = parseYaml(text.slice(eq + 1));
  } catch {
    value = text.slice(eq + 1);
  }
  if (value === undefined) value = null;
  return { keys, value };
}

/** Parses `key=value` (value as a YAML scalar: numbers, booleans, null, strings) into a nested object. */
export function parseOverride(text: string): Record<string, unknown> {
  const { keys, value } = splitOverride(text);
  return keys.reduceRight<unknown>((acc, k) => ({ [k]: acc }), value) as Record<string, unknown>;
}

/**
 * Sets one dotted key, changing nothing else: `model.n_embd=256` changes one field of an inline
 * model mapping (a folder path there is an error, not a mapping to replace); a whole section given
 * as a mapping (`data={train: x}`) merges into it, as in a file.
 */
function applyOverride(c: Record<string, unknown>, text: string): Record<string, unknown> {
  const { keys, value } = splitOverride(text);
  const root = { ...c };
  let node = root;
  for (let i = 0; i < keys.length - 1; i++) {
    const k = keys[i];
    const cur = node[k];
    if (cur === undefined) node[k] = {}; // an unknown key: validation names it
    else if (isMapping(cur)) node[k] = { ...cur };
    else throw configError(`--set ${keys.join('.')}: ${keys.slice(0, i + 1).join('.')} is ${showValue(cur)}, not a mapping`);
    node = node[k] as Record<string, unknown>;
  }
  const last = keys[keys.length - 1];
  const full = keys.join('.');
  node[last] = sections.has(full) && isMapping(value) && isMapping(node[last]) ? merge(node[last] as Record<string, unknown>, value, `${full}.`) : value;
  return root;
}

/** One line for a YAML/JSON syntax error: `file:line:col: message`, without the parser's code frame. */
function yamlErrorLine(file: string, err: unknown): string {
  const e = err as Error & { linePos?: Array<{ line: number; col: number }> };
  const first = String(e?.message ?? err).split('\n')[0].replace(/ at line \d+, column \d+:?\s*$/, '').replace(/:\s*$/, '');
  const pos = e?.linePos?.[0];
  return pos ? `${file}:${pos.line}:${pos.col}: ${first}` : `${file}: ${first}`;
}

/** Config given in code: any keys, a section's keys merged one by one into the defaults. */
export type ConfigInput = Omit<Partial<TrainConfig>, 'data' | 'loss'> & { data?: Partial<TrainConfig['data']>; loss?: Partial<TrainConfig['loss']> };

/** Defaults, then `inline`, then the file (YAML or JSON), then each override in order; validated. */
export function loadConfig(file: string | null, overrides: string[] = [], inline: ConfigInput = {}): TrainConfig {
  let fromFile: Record<string, unknown> = {};
  if (file) {
    const text = readTextFile(file, 'ERR_TDPO_CONFIG', 'config');
    try {
      // A warning (an unknown tag such as !!foo, which would be dropped) is an error here, not
      // a code frame on stderr.
      const doc = parseDocument(text);
      const problem = doc.errors[0] ?? doc.warnings[0];
      if (problem) throw problem;
      fromFile = (doc.toJS() ?? {}) as Record<string, unknown>;
    } catch (err) {
      throw configError(yamlErrorLine(file, err));
    }
    if (!isMapping(fromFile)) throw configError(`${file} must hold a mapping of keys`);
  }
  let c = merge(defaultConfig as unknown as Record<string, unknown>, inline as Record<string, unknown>);
  c = merge(c, fromFile);
  for (const o of overrides) c = applyOverride(c, o);
  return validateConfig(c as unknown as TrainConfig);
}
