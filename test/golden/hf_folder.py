"""What the golden-model generators share: safetensors files written as transformers writes them,
and the test inputs (three rows: plain, right-padded, left-padded).

Used by generate_models.py (GPT-2, GPT-NeoX) and generate_llama.py (the Llama family).
"""
import json
import os
import struct

import torch

DT = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def write_safetensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype in (torch.bfloat16, torch.float16) else t.numpy().tobytes()
        header[name] = {"dtype": DT[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def inputs(V, B=3, T=7):
    ids = torch.randint(0, V, (B, T))
    mask = torch.ones(B, T, dtype=torch.int64)
    mask[1, 5:] = 0   # right padding (the layout TDPO batches use)
    mask[2, :2] = 0   # left padding
    return ids, mask


def emit(out, name, cfg, params, forward, files, sort_keys=False):
    """One golden case: a fresh folder out/name with config.json and the weights (files(d) writes
    them), and the float64 logits of forward(params, cfg, ids, mask) without and with a mask."""
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=sort_keys)
        if sort_keys:
            f.write("\n")
    files(d)
    p64 = {k: v.double() for k, v in params.items()}
    ids, mask = inputs(cfg["vocab_size"])
    with torch.no_grad():
        plain = forward(p64, cfg, ids, None)
        masked = forward(p64, cfg, ids, mask)
    r = lambda t: [float("%.9g" % x) for x in t.flatten().tolist()]
    return {"name": name, "shape": list(ids.shape), "inputIds": ids.flatten().tolist(),
            "attentionMask": mask.flatten().tolist(), "logits": r(plain), "maskedLogits": r(masked)}
