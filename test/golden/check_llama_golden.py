#!/usr/bin/env python3
"""Checks test/golden/llama-golden.json (written by generate_llama.py) against Hugging Face transformers itself.

Not part of the golden output and not run by the test suite. Run with the interop venv:
    .venv-interop/bin/python test/golden/check_llama_golden.py [--exact]

Each folder under test/golden/models/ named in the golden file is loaded with
AutoModelForCausalLM.from_pretrained(dir, dtype=float64, attn_implementation="eager") and run on the golden's
inputs without and with the attention mask, with position_ids = arange(T) for every row (the golden convention:
positions ignore padding). Printed per case: max |diff| / max |logit| for the plain logits, and for the masked
logits on the positions whose mask is 1.

transformers runs three steps in float32 even in a float64 model: RMSNorm (`hidden_states.to(torch.float32)`),
the rotary inv_freq / cos / sin tables, and the attention softmax (`softmax(..., dtype=torch.float32)`). The
golden file does them in float64, so plain transformers agrees only to float32 rounding (~1e-7 relative, summed
over the layers). With --exact (the default also prints it) those three steps are patched to stay in float64, and
the agreement should then be at the golden file's 9-significant-digit rounding (~1e-9).

transformers' masked float64 run turns the left-padded row into NaN: its padded query positions see no allowed key,
their scores are all torch.finfo(float64).min, the float32 softmax casts those to -inf and returns NaN, and the
NaN values then reach every position of the row through 0 * NaN in the attention product. (A float32 model, or
the golden's float32-min fill in float64, gives finite, never-attended garbage there instead.) So the masked
logits are also checked row by row from the unpadded tokens alone, which needs no mask.
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn
import transformers
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 1e-6


def float64_patches():
    """Context manager: RMSNorm, rotary tables and eager softmax in float64 (for llama, qwen2, mistral)."""
    import contextlib
    from transformers.models.llama import modeling_llama
    from transformers.models.mistral import modeling_mistral
    from transformers.models.qwen2 import modeling_qwen2
    from transformers import modeling_rope_utils

    mods = [modeling_llama, modeling_qwen2, modeling_mistral]

    def rms_forward(self, h):
        v = h.pow(2).mean(-1, keepdim=True)
        return self.weight * (h * torch.rsqrt(v + self.variance_epsilon))

    def rope_forward(self, x, position_ids):
        inv = self.inv_freq64.to(x.device)
        fr = (inv[None, :, None].expand(position_ids.shape[0], -1, 1) @ position_ids[:, None, :].double()).transpose(1, 2)
        emb = torch.cat((fr, fr), dim=-1)
        return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)

    def eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        rk = mods[0].repeat_kv
        k, v = rk(key, module.num_key_value_groups), rk(value, module.num_key_value_groups)
        w = torch.matmul(query, k.transpose(2, 3)) * scaling
        if attention_mask is not None:
            w = w + attention_mask
        w = nn.functional.softmax(w, dim=-1)
        return torch.matmul(w, v).transpose(1, 2).contiguous(), w

    # inv_freq in float64: run the rope init functions with torch.float meaning float64.
    def inv_freq64(module):
        real_float = torch.float
        torch.float = torch.float64
        try:
            cfg = module.config
            rt = cfg.rope_parameters["rope_type"]
            fn = module.compute_default_rope_parameters if rt == "default" else modeling_rope_utils.ROPE_INIT_FUNCTIONS[rt]
            inv, _ = fn(cfg, None)
        finally:
            torch.float = real_float
        assert inv.dtype == torch.float64
        return inv

    @contextlib.contextmanager
    def ctx():
        saved = []
        for m in mods:
            for cls, name, fn in [(getattr(m, n), "forward", f) for n, f in
                                  [(k, rms_forward) for k in dir(m) if k.endswith("RMSNorm")] +
                                  [(k, rope_forward) for k in dir(m) if k.endswith("RotaryEmbedding")]]:
                saved.append((cls, name, cls.__dict__[name]))
                setattr(cls, name, fn)
            saved.append((m, "eager_attention_forward", m.eager_attention_forward))
            m.eager_attention_forward = eager
        try:
            yield inv_freq64
        finally:
            for obj, name, fn in reversed(saved):
                setattr(obj, name, fn)

    return ctx()


def run(model, ids, mask, pos):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits


def compare(case, model):
    """Returns (plain, masked, trimmed, nan_rows): relative max |diff| of the plain logits; of the masked logits on
    the mask=1 positions of the rows transformers kept finite; of the masked logits recomputed row by row from the
    unpadded tokens alone (no mask, position_ids = their original indices); and the rows transformers' masked run
    turned to NaN."""
    B, T = case["shape"]
    ids = torch.tensor(case["inputIds"]).view(B, T)
    mask = torch.tensor(case["attentionMask"]).view(B, T)
    V = len(case["logits"]) // (B * T)
    want = torch.tensor(case["logits"], dtype=torch.float64).view(B, T, V)
    want_m = torch.tensor(case["maskedLogits"], dtype=torch.float64).view(B, T, V)
    pos = torch.arange(T).expand(B, T)
    got = run(model, ids, None, pos)
    got_m = run(model, ids, mask, pos)
    keep = mask.bool()
    nan_rows = [b for b in range(B) if torch.isnan(got_m[b]).any()]
    ok_rows = keep.clone()
    ok_rows[nan_rows] = False
    plain = ((got - want).abs().max() / want.abs().max()).item()
    masked = ((got_m - want_m)[ok_rows].abs().max() / want_m[keep].abs().max()).item() if ok_rows.any() else math.nan
    trimmed = 0.0
    for b in range(B):
        idx = keep[b].nonzero().flatten()
        assert (idx == torch.arange(idx[0], idx[-1] + 1)).all(), "padding is only at the ends"
        g = run(model, ids[b:b + 1, idx], None, idx[None])
        trimmed = max(trimmed, (g[0] - want_m[b, idx]).abs().max().item())
    return plain, masked, trimmed / want_m[keep].abs().max().item(), nan_rows


def main():
    with open(os.path.join(HERE, "llama-golden.json")) as f:
        golden = json.load(f)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}; golden torch {golden['torch']}")
    ok = True
    for case in golden["cases"]:
        d = os.path.join(HERE, "models", case["name"])
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64, attn_implementation="eager").eval()
        cfg = model.config
        print(f"{case['name']}: {type(model).__name__}, rope {dict(cfg.rope_parameters)}, head_dim {model.model.layers[0].self_attn.head_dim}, "
              f"tied {model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()}, "
              f"sliding_window {getattr(cfg, 'sliding_window', None)}")
        line = lambda r: (f"plain {r[0]:.3e}   masked, mask=1 {r[1]:.3e}   masked via unpadded rows {r[2]:.3e}"
                          + (f"   [masked run NaN in rows {r[3]}]" if r[3] else ""))
        r = compare(case, model)
        print(f"    transformers as is:        {line(r)}")
        with float64_patches() as inv64:
            emb = model.model.rotary_emb
            emb.inv_freq64 = inv64(emb)
            r64 = compare(case, model)
        print(f"    float32 steps in float64:  {line(r64)}")
        ok &= max(r[0], r[2]) < TOL and not r[1] >= TOL and max(r64[:3]) < 1e-8 and not r64[3]
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
