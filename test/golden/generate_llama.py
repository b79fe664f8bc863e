#!/usr/bin/env python3
"""Tiny Llama-family checkpoints (Llama, Qwen2, Mistral) and their logits, from an independent implementation.

The forward pass below is written from Hugging Face transformers' modeling_llama.py, modeling_qwen2.py,
modeling_mistral.py and modeling_rope_utils.py (eager attention, positions 0..T-1 for every row whatever the
padding, attention mask applied to keys) in PyTorch float64, every step in float64 (transformers itself runs
RMSNorm, the rotary tables and the softmax in float32 even for a float64 model; this file does not). The
checkpoints are written as Hugging Face folders in the layouts found in the wild:

  llama-gqa-tied          Llama, 4 query / 2 key-value heads, tied embeddings (no lm_head tensor), config as
                          transformers 5 writes it (`rope_parameters: {rope_type: default, rope_theta}`).
  qwen2-bias-untied       Qwen2 (q/k/v biases, no o_proj bias), 1 key-value head, BF16 weights, config as
                          Qwen2 checkpoints ship it (top-level `rope_theta`, use_sliding_window false).
  llama3-scaled-headdim   Llama with `rope_scaling: {rope_type: llama3, ...}` + top-level `rope_theta` (the
                          transformers 4.4x layout), explicit head_dim 16 != hidden/heads, attention_bias true
                          (q/k/v/o biases), untied.
  mistral-linear-sharded  Mistral, `rope_parameters: {rope_type: linear, rope_theta, factor}` (the transformers
                          5 layout), sliding_window null, untied, two safetensors shards + index.

Regenerate with the interop venv's torch (Debian's python3 has no torch here):
    .venv-interop/bin/python test/golden/generate_llama.py
Check against transformers itself (not part of the golden output):
    .venv-interop/bin/python test/golden/check_llama_golden.py
"""
import json
import math
import os

import torch

import hf_folder
from hf_folder import write_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "models")
torch.manual_seed(11)


# ---- config reading, as transformers 5 resolves it --------------------------------------------------------------

def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def kv_heads(cfg):
    return cfg.get("num_key_value_heads") or cfg["num_attention_heads"]


def rope_params(cfg):
    """RotaryEmbeddingConfigMixin.convert_rope_params_to_dict/standardize_rope_params: `rope_scaling` (4.x) or
    `rope_parameters` (5.x); rope_theta inside it, else top-level `rope_theta`, else 10000."""
    rp = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    rp.setdefault("rope_type", rp.get("type", "default"))
    rp.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    if rp["rope_type"] == "llama3":
        rp.setdefault("original_max_position_embeddings", cfg["max_position_embeddings"])
    return rp


def inv_freq(cfg):
    """compute_default_rope_parameters / _compute_linear_scaling_rope_parameters / _compute_llama3_parameters."""
    rp = rope_params(cfg)
    assert rp.get("partial_rotary_factor", 1.0) == 1.0, "Llama-family models rotate the whole head_dim"
    dim = head_dim(cfg)
    inv = 1.0 / (rp["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).double() / dim))
    if rp["rope_type"] == "default":
        return inv
    if rp["rope_type"] == "linear":
        return inv / rp["factor"]
    if rp["rope_type"] == "llama3":
        factor, lo, hi = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
        old = rp["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / lo, old / hi
        wavelen = 2 * math.pi / inv
        out = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, out)
    raise ValueError(rp["rope_type"])


def biases(cfg):
    """Which attention projections carry a bias: Qwen2 q/k/v always, Llama all four iff attention_bias."""
    if cfg["model_type"] == "qwen2":
        return {"q_proj", "k_proj", "v_proj"}
    if cfg["model_type"] == "llama" and cfg.get("attention_bias", False):
        return {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert not cfg.get("attention_bias", False)
    return set()


def sliding_window(cfg):
    """Mistral: `sliding_window` (default 4096; null = none). Qwen2: only with use_sliding_window (5.x sets
    sliding_window to None otherwise; with it, layers >= max_window_layers slide). Llama: never."""
    if cfg["model_type"] == "mistral":
        return cfg.get("sliding_window", 4096)
    if cfg["model_type"] == "qwen2" and cfg.get("use_sliding_window", False):
        return cfg.get("sliding_window", 4096)
    return None


# ---- forward ----------------------------------------------------------------------------------------------------

def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def attend(q, k, v, mask):
    T = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None]
    if mask is not None:
        allowed = allowed & mask.bool()[:, None, None, :]
    scores = scores.masked_fill(~allowed, torch.finfo(torch.float32).min)
    return scores.softmax(-1) @ v


def llama_forward(p, cfg, ids, mask):
    window = sliding_window(cfg)
    assert window is None or window >= ids.shape[1], "sliding-window attention is not modelled here"
    B, T = ids.shape
    H, KV, D = cfg["num_attention_heads"], kv_heads(cfg), head_dim(cfg)
    eps = cfg["rms_norm_eps"]
    fr = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq(cfg))
    emb = torch.cat([fr, fr], -1)
    cos, sin = emb.cos(), emb.sin()
    rope = lambda t: t * cos + torch.cat([-t[..., D // 2:], t[..., :D // 2]], -1) * sin
    bias = biases(cfg)

    x = p["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        g = lambda n: p[f"model.layers.{l}.{n}"]

        def proj(h, n):
            y = h @ g(f"self_attn.{n}.weight").T
            return y + g(f"self_attn.{n}.bias") if n in bias else y

        a = rms(x, g("input_layernorm.weight"), eps)
        q = proj(a, "q_proj").view(B, T, H, D).transpose(1, 2)
        k = proj(a, "k_proj").view(B, T, KV, D).transpose(1, 2)
        v = proj(a, "v_proj").view(B, T, KV, D).transpose(1, 2)
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)  # repeat_kv: kv head j -> j*n_rep..
        y = attend(q, k, v, mask).transpose(1, 2).reshape(B, T, H * D)
        x = x + proj(y, "o_proj")
        m = rms(x, g("post_attention_layernorm.weight"), eps)
        gate, up = m @ g("mlp.gate_proj.weight").T, m @ g("mlp.up_proj.weight").T
        x = x + (torch.nn.functional.silu(gate) * up) @ g("mlp.down_proj.weight").T
    x = rms(x, p["model.norm.weight"], eps)
    W = p["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else p["lm_head.weight"]
    return x @ W.T


# ---- parameters, in state-dict order ------------------------------------------------------------------------------

def llama_shapes(cfg):
    C, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV, D = cfg["num_attention_heads"], kv_heads(cfg), head_dim(cfg)
    bias = biases(cfg)
    s = {"model.embed_tokens.weight": (V, C)}
    for l in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{l}."
        for n, out, inp in [("q_proj", H * D, C), ("k_proj", KV * D, C), ("v_proj", KV * D, C), ("o_proj", C, H * D)]:
            s[f"{pre}self_attn.{n}.weight"] = (out, inp)
            if n in bias:
                s[f"{pre}self_attn.{n}.bias"] = (out,)
        s[f"{pre}mlp.gate_proj.weight"] = (I, C)
        s[f"{pre}mlp.up_proj.weight"] = (I, C)
        s[f"{pre}mlp.down_proj.weight"] = (C, I)
        s[f"{pre}input_layernorm.weight"] = (C,)
        s[f"{pre}post_attention_layernorm.weight"] = (C,)
    s["model.norm.weight"] = (C,)
    if not cfg.get("tie_word_embeddings", False):
        s["lm_head.weight"] = (V, C)
    return s


def rand_params(shapes, scale=0.3):
    return {n: (1 + 0.1 * torch.randn(sh)) if n.endswith("norm.weight") else scale * torch.randn(sh)
            for n, sh in shapes.items()}


def emit(name, cfg, params, files):
    return hf_folder.emit(OUT, name, cfg, params, llama_forward, files, sort_keys=True)


def single_file(params, dtype=None):
    def files(d):  # safetensors writes its header (and data) in name order
        t = {n: (params[n].to(dtype) if dtype else params[n]) for n in sorted(params)}
        write_safetensors(os.path.join(d, "model.safetensors"), t)
    return files


cases = []

# 1. Llama, GQA (4 query heads on 2 key-value heads), tied embeddings; config.json as transformers 5.x saves it.
c1 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 61, "hidden_size": 32,
      "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "head_dim": 8, "hidden_act": "silu", "max_position_embeddings": 64, "initializer_range": 0.02,
      "rms_norm_eps": 1e-6, "use_cache": True, "pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2,
      "pretraining_tp": 1, "tie_word_embeddings": True, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
      "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False, "dtype": "float32",
      "transformers_version": "5.18.0"}
p1 = rand_params(llama_shapes(c1))
cases.append(emit("llama-gqa-tied", c1, p1, single_file(p1)))

# 2. Qwen2: q/k/v biases, 4 query heads on 1 key-value head, untied, BF16 weights; config.json as Qwen2 ships it.
c2 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 83, "hidden_size": 32,
      "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
      "hidden_act": "silu", "max_position_embeddings": 64, "initializer_range": 0.02, "rms_norm_eps": 1e-6,
      "use_cache": True, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
      "rope_theta": 1000000.0, "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 2,
      "attention_dropout": 0.0, "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_mrope": False}
p2 = {k: v.to(torch.bfloat16).float() for k, v in rand_params(llama_shapes(c2)).items()}  # exact in BF16
cases.append(emit("qwen2-bias-untied", c2, p2, single_file(p2, torch.bfloat16)))

# 3. Llama 3.1-style rope scaling, explicit head_dim (q_proj is [64, 32]), attention_bias, untied; transformers 4.4x
#    layout. original_max_position_embeddings 32 with head_dim 16, theta 10000 puts the rotary wavelengths
#    (6.3, 19.9, 62.8, ...) in all three llama3 bands: kept (< 32/4), smoothed (8..32), divided by factor (> 32).
c3 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 107, "hidden_size": 32,
      "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "head_dim": 16, "hidden_act": "silu", "max_position_embeddings": 64, "initializer_range": 0.02,
      "rms_norm_eps": 1e-5, "use_cache": True, "bos_token_id": 1, "eos_token_id": 2, "pretraining_tp": 1,
      "tie_word_embeddings": False, "rope_theta": 10000.0,
      "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 32},
      "attention_bias": True, "attention_dropout": 0.0, "mlp_bias": False, "torch_dtype": "float32",
      "transformers_version": "4.45.2"}
p3 = rand_params(llama_shapes(c3))
cases.append(emit("llama3-scaled-headdim", c3, p3, single_file(p3)))

# 4. Mistral, linear rope scaling in the transformers 5 `rope_parameters` layout, no sliding window, untied,
#    sharded across two files with an index (split in state-dict order, in the middle of a layer).
c4 = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 89, "hidden_size": 32,
      "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
      "head_dim": 8, "hidden_act": "silu", "max_position_embeddings": 64, "initializer_range": 0.02,
      "rms_norm_eps": 1e-5, "use_cache": True, "pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2,
      "tie_word_embeddings": False, "rope_parameters": {"factor": 2.0, "rope_theta": 50000.0, "rope_type": "linear"},
      "sliding_window": None, "attention_dropout": 0.0, "dtype": "float32", "transformers_version": "5.18.0"}
p4 = rand_params(llama_shapes(c4))


def sharded_files(d):
    names = list(p4)
    half = names.index("model.layers.1.mlp.gate_proj.weight")  # layer 1's attention in shard 1, its MLP in shard 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, ns in shards.items():
        write_safetensors(os.path.join(d, fname), {n: p4[n] for n in sorted(ns)})
        weight_map.update({n: fname for n in ns})
    total = sum(t.numel() * 4 for t in p4.values())
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total},
                   "weight_map": {n: weight_map[n] for n in sorted(weight_map)}}, f, indent=2)


cases.append(emit("mistral-linear-sharded", c4, p4, sharded_files))

with open(os.path.join(HERE, "llama-golden.json"), "w") as f:
    json.dump({"generator": "test/golden/generate_llama.py", "torch": torch.__version__, "cases": cases}, f)
print(f"wrote {len(cases)} llama-family cases")
