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
  throw configError(`config.model_type ${showValue(type)} is not supported: use "gpt2" or "gpt_neox"`);
}
