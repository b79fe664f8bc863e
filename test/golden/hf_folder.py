"""What the golden-model generators share: safetensors files written as transformers writes them,
and the test inputs (three rows: plain, right-padded, left-padded).

Used by generate_models.py (GPT-2, GPT-NeoX) and generate_llama.py (the Llama family).
"""
import json
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
