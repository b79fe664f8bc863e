// Hugging Face config.json -> the plain struct the native model takes. Anything the native
// forward pass would silently get wrong (another activation, untied GPT-NeoX embeddings turned
// tied, ...) is an error naming the field.
import { codedError, showValue } from '../errors.js';
import type { NativeModelConfig } from '../native-types.js';

export type { NativeModelConfig };


export type HfConfig = Record<string, unknown>;

const configError = (msg: string) => codedError('RangeError', 'ERR_TDPO_CONFIG', msg);

function int(c: HfConfig, key: string, fallback?: number): number {
  const v = c[key] ?? fallback;
  if (!Number.isSafeInteger(v) || (v as number) <= 0) {
    throw configError(`config.${key} must be a positive integer, got ${showValue(c[key])}`);
  }
  return v as number;
}
/** c[key] as a finite number, or fallback when absent; `label` names the field in errors. */
function num(c: HfConfig, key: string, fallback: number, label = key): number {
  const v = c[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw configError(`config.${label} must be a number, got ${showValue(c[key])}`);
  return v;
}
function expect(c: HfConfig, key: string, allowed: unknown[], fallback: unknown): void {
  const v = c[key] ?? fallback;
  if (!allowed.includes(v)) {
    throw configError(`config.${key} = ${showValue(v)} is not supported (supported: ${allowed.map((a) => showValue(a)).join(', ')})`);
  }
}

/**
 * GPT-NeoX's rotary settings under every name transformers has written: `rotary_pct` and
 * `rotary_emb_base` (v4), also `partial_rotary_factor` and `rope_theta` (v4.45+), and a
 * `rope_parameters` object (v5, which also reads a `rope_scaling` object there). Absent ones take
 * transformers' defaults, 0.25 and 10000, so that a config means the same model to both of us.
 */
function neoxRotary(c: HfConfig): { pct: number; base: number } {
  const key = c.rope_parameters != null ? 'rope_parameters' : 'rope_scaling';
  const params = c[key] ?? {};
  if (typeof params !== 'object' || Array.isArray(params)) {
    throw configError(`config.${key} must be an object, got ${showValue(params)}`);
  }
  const p = params as HfConfig;
  const ropeType = p.rope_type ?? p.type ?? 'default';
  if (ropeType !== 'default') {
    throw configError(`config.${key}.rope_type = ${showValue(ropeType)} is not supported (supported: "default")`);
  }
  // The first of these fields that is present, else transformers' default.
  const first = (names: [HfConfig, string][], fallback: number): number => {
    const hit = names.find(([obj, name]) => obj[name] != null);
    return hit ? num(hit[0], hit[1], fallback, hit[0] === p ? `${key}.${hit[1]}` : hit[1]) : fallback;
  };
  const pct = first([[p, 'partial_rotary_factor'], [c, 'rotary_pct'], [c, 'partial_rotary_factor']], 0.25);
  const base = first([[p, 'rope_theta'], [c, 'rotary_emb_base'], [c, 'rope_theta']], 10000);
  if (!(base > 0)) throw configError(`the rotary base (config.rotary_emb_base or rope_theta) must be > 0, got ${base}`);
  return { pct, base };
}

export function toNativeConfig(c: HfConfig): NativeModelConfig {
  const n = nativeConfigOf(c);
  checkRotaryRange(n);
  return n;
}

function nativeConfigOf(c: HfConfig): NativeModelConfig {
  const type = c.model_type;
  if (type === 'gpt2') {
    expect(c, 'activation_function', ['gelu_new', 'gelu_pytorch_tanh'], 'gelu_new');
    expect(c, 'scale_attn_weights', [true], true);
    expect(c, 'scale_attn_by_inverse_layer_idx', [false], false);
    expect(c, 'reorder_and_upcast_attn', [false], false);
    expect(c, 'add_cross_attention', [false], false);
    expect(c, 'tie_word_embeddings', [true], true); // lm_head is wte: an untied lm_head.weight would be ignored
    const hidden = int(c, 'n_embd');
    return {
      modelType: 'gpt2',
      vocabSize: int(c, 'vocab_size'),
      maxPositions: int(c, 'n_positions'),
      hidden,
      layers: int(c, 'n_layer'),
      heads: int(c, 'n_head'),
      intermediate: c.n_inner == null ? 4 * hidden : int(c, 'n_inner'),
      layerNormEps: num(c, 'layer_norm_epsilon', 1e-5),
    };
  }
  if (type === 'gpt_neox') {
    expect(c, 'hidden_act', ['gelu'], 'gelu');
    expect(c, 'tie_word_embeddings', [false], false);
    expect(c, 'attention_bias', [true], true);
    const rope = neoxRotary(c);
    return {
      modelType: 'gpt_neox',
      vocabSize: int(c, 'vocab_size'),
      maxPositions: int(c, 'max_position_embeddings'),
      hidden: int(c, 'hidden_size'),
      layers: int(c, 'num_hidden_layers'),
      heads: int(c, 'num_attention_heads'),
      intermediate: int(c, 'intermediate_size'),
      layerNormEps: num(c, 'layer_norm_eps', 1e-5),
      rotaryPct: rope.pct,
      rotaryBase: rope.base,
      parallelResidual: c.use_parallel_residual === undefined ? true : Boolean(c.use_parallel_residual),
    };
  }
  if (typeof type === 'string' && LLAMA_FAMILY.includes(type)) return llamaConfig(c, type);
  // SmolLM-style folders declare the architecture even where a tool wrote another model_type.
  if (Array.isArray(c.architectures) && c.architectures.includes('LlamaForCausalLM')) return llamaConfig(c, 'llama');
  throw configError(`config.model_type ${showValue(type)} is not supported: use "gpt2", "gpt_neox", ${LLAMA_FAMILY.map((t) => `"${t}"`).join(', ')}`);
}

/** The model types the Llama runner computes: they differ only in their configs' defaults and biases. */
export const LLAMA_FAMILY = ['llama', 'qwen2', 'mistral'];

/**
 * transformers' defaults where a Llama-family config.json leaves a field out (configuration_*.py):
 * Qwen2's num_key_value_heads is 32, Mistral's 8, Llama's the head count; Mistral's sliding
 * window is 4096 (Llama's config has none; Qwen2's applies only with use_sliding_window).
 */
const FAMILY_DEFAULTS: Record<string, { kvHeads?: number; ropeTheta: number; slidingWindow: number | null }> = {
  llama: { ropeTheta: 10000, slidingWindow: null },
  qwen2: { kvHeads: 32, ropeTheta: 10000, slidingWindow: null },
  mistral: { kvHeads: 8, ropeTheta: 10000, slidingWindow: 4096 },
};

/**
 * The rotary settings under both layouts transformers writes: `rope_theta` with a `rope_scaling`
 * object (v4), or one `rope_parameters` object holding `rope_theta` too (v5). default, linear and
 * llama3 are computed as modeling_rope_utils.py computes them; any other type is refused.
 */
function llamaRope(c: HfConfig, fallbackTheta: number) {
  const key = c.rope_parameters != null ? 'rope_parameters' : 'rope_scaling';
  const params = c[key] ?? {};
  if (typeof params !== 'object' || Array.isArray(params)) throw configError(`config.${key} must be an object, got ${showValue(params)}`);
  const p = params as HfConfig;
  const ropeType = p.rope_type ?? p.type ?? 'default';
  if (ropeType !== 'default' && ropeType !== 'linear' && ropeType !== 'llama3') {
    throw configError(`config.${key}.rope_type = ${showValue(ropeType)} is not supported (supported: "default", "linear", "llama3")`);
  }
  const theta = p.rope_theta != null ? num(p, 'rope_theta', fallbackTheta, `${key}.rope_theta`) : num(c, 'rope_theta', fallbackTheta);
  if (!(theta > 0)) throw configError(`config.rope_theta must be > 0, got ${theta}`);
  if (p.partial_rotary_factor != null || c.partial_rotary_factor != null) {
    const f = (p.partial_rotary_factor ?? c.partial_rotary_factor) as unknown;
    if (f !== 1 && f !== 1.0) throw configError(`config.partial_rotary_factor = ${showValue(f)} is not supported for this model type (supported: 1)`);
  }
  const out = { ropeType: ropeType as 'default' | 'linear' | 'llama3', rotaryBase: theta, ropeFactor: 1, ropeLowFreqFactor: 1, ropeHighFreqFactor: 4, ropeOriginalMaxPositions: 0 };
  if (ropeType !== 'default') out.ropeFactor = num(p, 'factor', NaN, `${key}.factor`);
  if (ropeType === 'llama3') {
    out.ropeLowFreqFactor = num(p, 'low_freq_factor', NaN, `${key}.low_freq_factor`);
    out.ropeHighFreqFactor = num(p, 'high_freq_factor', NaN, `${key}.high_freq_factor`);
    // Absent, transformers takes max_position_embeddings (modeling_rope_utils).
    out.ropeOriginalMaxPositions = int(p, 'original_max_position_embeddings', int(c, 'max_position_embeddings'));
  }
  return out;
}

function llamaConfig(c: HfConfig, type: string): NativeModelConfig {
  const d = FAMILY_DEFAULTS[type] ?? FAMILY_DEFAULTS.llama;
  expect(c, 'hidden_act', ['silu'], 'silu');
  expect(c, 'pretraining_tp', [1], 1); // >1 splits the matmuls differently in transformers v4
  const heads = int(c, 'num_attention_heads');
  const bool = (key: string, fallback: boolean): boolean => {
    const v = c[key] ?? fallback;
    if (typeof v !== 'boolean') throw configError(`config.${key} must be true or false, got ${showValue(c[key])}`);
    return v;
  };
  // Only Llama reads attention_bias (q, k, v and o) and mlp_bias; Qwen2 always has q/k/v biases
  // and nothing else; Mistral has none (transformers hard-codes bias=False for what it does not read).
  const attentionBias = type === 'llama' ? bool('attention_bias', false) : false;
  const mlpBias = type === 'llama' ? bool('mlp_bias', false) : false;
  let slidingWindow = 0;
  if (type === 'qwen2') {
    if (bool('use_sliding_window', false)) throw configError('config.use_sliding_window = true is not supported (Qwen2 sliding-window layers)');
  } else if (type === 'mistral') {
    // null (or absent where transformers' default is null): attention over every position.
    if (c.sliding_window !== null && (c.sliding_window !== undefined || d.slidingWindow !== null)) {
      slidingWindow = int(c, 'sliding_window', d.slidingWindow ?? undefined);
    }
  }
  return {
    modelType: 'llama',
    vocabSize: int(c, 'vocab_size'),
    maxPositions: int(c, 'max_position_embeddings'),
    hidden: int(c, 'hidden_size'),
    layers: int(c, 'num_hidden_layers'),
    heads,
    intermediate: int(c, 'intermediate_size'),
    layerNormEps: num(c, 'rms_norm_eps', 1e-6),
    // Absent: the type's default; an explicit null: the head count (configuration_*.py).
    kvHeads: c.num_key_value_heads === null ? heads : int(c, 'num_key_value_heads', d.kvHeads ?? heads),
    headDim: c.head_dim == null ? 0 : int(c, 'head_dim'),
    tieEmbeddings: bool('tie_word_embeddings', false),
    qkvBias: type === 'qwen2' || attentionBias,
    oBias: attentionBias,
    mlpBias,
    ...llamaRope(c, d.ropeTheta),
    slidingWindow,
  };
}

/**
 * A positive rope_theta or factor can still be far too small: the rotary angles, position times
 * 1 / theta^(2i/d) / factor, then overflow float32 and every logit is NaN. Refused with the key.
 */
function checkRotaryRange(n: NativeModelConfig): void {
  const head = n.headDim || n.hidden / n.heads;
  const dims = n.modelType === 'gpt_neox' ? Math.floor(head * (n.rotaryPct ?? 1)) : head;
  if (!(dims >= 2) || n.rotaryBase === undefined) return;
  const factor = n.ropeFactor ?? 1;
  const fastest = Math.max(1, n.rotaryBase ** (-(dims - 2) / dims)) / Math.min(1, factor);
  if (!(fastest * n.maxPositions < 3.4e38)) {
    throw configError(
      `config.rope_theta = ${n.rotaryBase}${factor !== 1 ? ` with a rope factor of ${factor}` : ''} makes the rotary angles overflow float32 within ${n.maxPositions} positions (every logit would be NaN)`,
    );
  }
}
