#!/usr/bin/env python3
"""Tiny GPT-2 and GPT-NeoX checkpoints and their logits, from an independent implementation.

The forward passes below are written from Hugging Face transformers' modeling_gpt2.py and
modeling_gpt_neox.py (eager attention, positions 0..T-1, attention mask applied to keys) in
PyTorch float64; the checkpoints are written as Hugging Face folders in the layouts found in the
wild (GPT-2 without the `transformer.` prefix and with its attn.bias buffers; GPT-NeoX in BF16;
GPT-NeoX sharded with an index and a rotary inv_freq buffer).

Regenerate with Debian's python3-torch:  /usr/bin/python3 test/golden/generate_models.py
"""
import json
import math
import os

import torch

import hf_folder
from hf_folder import write_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "models")
torch.manual_seed(7)


def ln(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def attend(q, k, v, mask):
    T = q.shape[-2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None]
    if mask is not None:
        allowed = allowed & mask.bool()[:, None, None, :]
    scores = scores.masked_fill(~allowed, torch.finfo(torch.float32).min)
    return scores.softmax(-1) @ v


def gpt2_forward(p, cfg, ids, mask):
    B, T = ids.shape
    C, H = cfg["n_embd"], cfg["n_head"]
    D = C // H
    x = p["wte.weight"][ids] + p["wpe.weight"][:T]
    for l in range(cfg["n_layer"]):
        g = lambda n: p[f"h.{l}.{n}"]
        a = ln(x, g("ln_1.weight"), g("ln_1.bias"), cfg["layer_norm_epsilon"])
        q, k, v = (a @ g("attn.c_attn.weight") + g("attn.c_attn.bias")).split(C, -1)
        sh = lambda t: t.view(B, T, H, D).transpose(1, 2)
        y = attend(sh(q), sh(k), sh(v), mask).transpose(1, 2).reshape(B, T, C)
        x = x + y @ g("attn.c_proj.weight") + g("attn.c_proj.bias")
        m = ln(x, g("ln_2.weight"), g("ln_2.bias"), cfg["layer_norm_epsilon"])
        h = m @ g("mlp.c_fc.weight") + g("mlp.c_fc.bias")
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
        x = x + h @ g("mlp.c_proj.weight") + g("mlp.c_proj.bias")
    x = ln(x, p["ln_f.weight"], p["ln_f.bias"], cfg["layer_norm_epsilon"])
    return x @ p["wte.weight"].T


def neox_forward(p, cfg, ids, mask):
    B, T = ids.shape
    C, H = cfg["hidden_size"], cfg["num_attention_heads"]
    D = C // H
    rot = int(D * cfg["rotary_pct"])
    inv = 1.0 / (cfg["rotary_emb_base"] ** (torch.arange(0, rot, 2, dtype=torch.int64).double() / rot))
    fr = torch.outer(torch.arange(T, dtype=torch.float64), inv)
    emb = torch.cat([fr, fr], -1)
    cos, sin = emb.cos(), emb.sin()

    def rope(t):
        r, rest = t[..., :rot], t[..., rot:]
        half = torch.cat([-r[..., rot // 2:], r[..., :rot // 2]], -1)
        return torch.cat([r * cos + half * sin, rest], -1)

    x = p["gpt_neox.embed_in.weight"][ids]
    eps = cfg["layer_norm_eps"]
    for l in range(cfg["num_hidden_layers"]):
        g = lambda n: p[f"gpt_neox.layers.{l}.{n}"]
        a = ln(x, g("input_layernorm.weight"), g("input_layernorm.bias"), eps)
        qkv = (a @ g("attention.query_key_value.weight").T + g("attention.query_key_value.bias"))
        qkv = qkv.view(B, T, H, 3 * D).permute(0, 2, 1, 3)
        q, k, v = rope(qkv[..., :D]), rope(qkv[..., D:2 * D]), qkv[..., 2 * D:]
        y = attend(q, k, v, mask).permute(0, 2, 1, 3).reshape(B, T, C)
        y = y @ g("attention.dense.weight").T + g("attention.dense.bias")

        def mlp(h):
            h = ln(h, g("post_attention_layernorm.weight"), g("post_attention_layernorm.bias"), eps)
            h = h @ g("mlp.dense_h_to_4h.weight").T + g("mlp.dense_h_to_4h.bias")
            h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
            return h @ g("mlp.dense_4h_to_h.weight").T + g("mlp.dense_4h_to_h.bias")

        x = x + y + mlp(x) if cfg["use_parallel_residual"] else (lambda x1: x1 + mlp(x1))(x + y)
    x = ln(x, p["gpt_neox.final_layer_norm.weight"], p["gpt_neox.final_layer_norm.bias"], eps)
    return x @ p["embed_out.weight"].T


def rand_params(shapes, scale=0.3):
    out = {}
    for name, shape in shapes.items():
        if name.endswith("layernorm.weight") or ".ln_" in "." + name and name.endswith("weight") or name.endswith("layer_norm.weight"):
            out[name] = 1 + 0.1 * torch.randn(shape)
        else:
            out[name] = scale * torch.randn(shape)
    return out


def gpt2_shapes(c):
    C, I, V = c["n_embd"], 4 * c["n_embd"], c["vocab_size"]
    s = {"wte.weight": (V, C), "wpe.weight": (c["n_positions"], C)}
    for l in range(c["n_layer"]):
        for n, sh in [("ln_1.weight", (C,)), ("ln_1.bias", (C,)), ("attn.c_attn.weight", (C, 3 * C)),
                      ("attn.c_attn.bias", (3 * C,)), ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
                      ("ln_2.weight", (C,)), ("ln_2.bias", (C,)), ("mlp.c_fc.weight", (C, I)), ("mlp.c_fc.bias", (I,)),
                      ("mlp.c_proj.weight", (I, C)), ("mlp.c_proj.bias", (C,))]:
            s[f"h.{l}.{n}"] = sh
    s["ln_f.weight"], s["ln_f.bias"] = (C,), (C,)
    return s


def neox_shapes(c):
    C, I, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    s = {"gpt_neox.embed_in.weight": (V, C)}
    for l in range(c["num_hidden_layers"]):
        for n, sh in [("input_layernorm.weight", (C,)), ("input_layernorm.bias", (C,)),
                      ("post_attention_layernorm.weight", (C,)), ("post_attention_layernorm.bias", (C,)),
                      ("attention.query_key_value.weight", (3 * C, C)), ("attention.query_key_value.bias", (3 * C,)),
                      ("attention.dense.weight", (C, C)), ("attention.dense.bias", (C,)),
                      ("mlp.dense_h_to_4h.weight", (I, C)), ("mlp.dense_h_to_4h.bias", (I,)),
                      ("mlp.dense_4h_to_h.weight", (C, I)), ("mlp.dense_4h_to_h.bias", (C,))]:
            s[f"gpt_neox.layers.{l}.{n}"] = sh
    s["gpt_neox.final_layer_norm.weight"] = (C,)
    s["gpt_neox.final_layer_norm.bias"] = (C,)
    s["embed_out.weight"] = (V, C)
    return s


def emit(name, cfg, params, forward, files):
    return hf_folder.emit(OUT, name, cfg, params, forward, files)


cases = []

gcfg = {"model_type": "gpt2", "vocab_size": 97, "n_positions": 16, "n_embd": 32, "n_layer": 2, "n_head": 4,
        "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
gp = rand_params(gpt2_shapes(gcfg))


def gpt2_files(d):
    t = dict(gp)
    for l in range(gcfg["n_layer"]):  # the causal-mask buffers old GPT-2 checkpoints carry
        t[f"h.{l}.attn.bias"] = torch.tril(torch.ones(1, 1, 16, 16))
    write_safetensors(os.path.join(d, "model.safetensors"), t)


cases.append(emit("gpt2-tiny", gcfg, gp, gpt2_forward, gpt2_files))

ncfg = {"model_type": "gpt_neox", "vocab_size": 101, "max_position_embeddings": 32, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "rotary_pct": 0.25,
        "rotary_emb_base": 10000, "use_parallel_residual": True, "hidden_act": "gelu",
        "layer_norm_eps": 1e-5, "tie_word_embeddings": False}
npar = {k: v.to(torch.bfloat16).float() for k, v in rand_params(neox_shapes(ncfg)).items()}  # exact in BF16
cases.append(emit("pythia-tiny-bf16", ncfg, npar, neox_forward,
                  lambda d: write_safetensors(os.path.join(d, "model.safetensors"),
                                              {k: v.to(torch.bfloat16) for k, v in npar.items()})))

scfg = dict(ncfg, use_parallel_residual=False, rotary_pct=0.5, rotary_emb_base=500, vocab_size=89)
spar = rand_params(neox_shapes(scfg))


def sharded_files(d):
    names = list(spar)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, ns in shards.items():
        t = {n: spar[n] for n in ns}
        if fname.endswith("1-of-00002.safetensors"):
            t["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = torch.zeros(4)
            weight_map["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = fname
        write_safetensors(os.path.join(d, fname), t)
        weight_map.update({n: fname for n in ns})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)


cases.append(emit("neox-sequential-sharded", scfg, spar, neox_forward, sharded_files))

with open(os.path.join(HERE, "model-golden.json"), "w") as f:
    json.dump({"generator": "test/golden/generate_models.py", "torch": torch.__version__, "cases": cases}, f)
print(f"wrote {len(cases)} model cases")
