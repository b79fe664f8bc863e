#!/usr/bin/env python3
"""Golden values for one TDPO2 optimizer step, from an independent implementation.

Policy = the tiny GPT-2 checkpoint of generate_models.py (its forward re-used from there), the
reference a frozen copy of it; a batch of two pairs laid out as the official code collates them;
the loss of the official code (labels shifted by one: logits[:, :-1] score labels[:, 1:]); autograd
in float64; torch.nn.utils.clip_grad_norm_(10); torch.optim.RMSprop(lr=1e-3) (PyTorch defaults, as
the official code); then the policy's logits on the batch after the update.

Regenerate with Debian's python3-torch:  /usr/bin/python3 test/golden/generate_train_step.py
"""
import json
import os
import struct

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        assert e["dtype"] == "F32"
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(e["shape"]).clone()
    return out


# Load the forward function without re-running the model generator's side effects.
src = open(os.path.join(HERE, "generate_models.py")).read().split("\ncases = []")[0]
gm = {"__file__": os.path.join(HERE, "generate_models.py")}
exec(compile(src, "generate_models.py", "exec"), gm)

d = os.path.join(HERE, "models", "gpt2-tiny")
cfg = json.load(open(os.path.join(d, "config.json")))
params = {k: v.double().requires_grad_(True) for k, v in read_safetensors(os.path.join(d, "model.safetensors")).items()
          if not k.endswith(".attn.bias")}
ref = {k: v.detach().clone() for k, v in params.items()}

# Two pairs: prompt + response + EOS (1), right-padded with 0; chosen rows first.
rows = [([5, 6, 7], [20, 21, 1]), ([8, 9], [30, 31, 32, 1]),      # chosen
        ([5, 6, 7], [40, 1]), ([8, 9], [50, 51, 52, 53, 1])]       # rejected
T = max(len(p) + len(r) for p, r in rows)
ids = torch.zeros(4, T, dtype=torch.long)
labels = torch.full((4, T), -100, dtype=torch.long)
mask = torch.zeros(4, T, dtype=torch.long)
for i, (p, r) in enumerate(rows):
    seq = p + r
    ids[i, :len(seq)] = torch.tensor(seq)
    labels[i, len(p):len(seq)] = torch.tensor(r)
    mask[i, :len(seq)] = 1


def stats(logits, ref_logits):
    lab = labels[:, 1:].clone()
    lg, rlg = logits[:, :-1], ref_logits[:, :-1]
    m = lab != -100
    lab[~m] = 0
    lp, rlp = lg.log_softmax(-1), rlg.log_softmax(-1)
    q = rlp.exp()
    kl = torch.where(q > 0, q * (rlp - lp), torch.zeros_like(q)).sum(-1)
    tok = lp.gather(2, lab.unsqueeze(2)).squeeze(2) - rlp.gather(2, lab.unsqueeze(2)).squeeze(2)
    z = torch.zeros_like(tok)
    return torch.where(m, tok, z).sum(-1), torch.where(m, kl, z).sum(-1)


beta, alpha = 0.1, 0.5
logits = gm["gpt2_forward"](params, cfg, ids, mask)
with torch.no_grad():
    ref_logits = gm["gpt2_forward"](ref, cfg, ids, mask)
margin, kl = stats(logits, ref_logits)
values = margin[:2] - margin[2:] - alpha * (kl[2:] - kl[:2].detach())
loss = (-torch.nn.functional.logsigmoid(beta * values)).mean()
opt = torch.optim.RMSprop(list(params.values()), lr=1e-3)
loss.backward()
norm = torch.nn.utils.clip_grad_norm_(list(params.values()), 10.0)
opt.step()
with torch.no_grad():
    after = gm["gpt2_forward"](params, cfg, ids, mask)

out = {
    "generator": "test/golden/generate_train_step.py", "torch": torch.__version__,
    "checkpoint": "gpt2-tiny", "lr": 1e-3, "maxGradNorm": 10, "beta": beta, "alpha": alpha,
    "shape": [4, T], "inputIds": ids.flatten().tolist(), "labels": labels.flatten().tolist(),
    "attentionMask": mask.flatten().tolist(), "loss": float(loss), "gradNorm": float(norm),
    "logitsAfter": [float("%.9g" % x) for x in after.flatten().tolist()],
}
with open(os.path.join(HERE, "train-step-golden.json"), "w") as f:
    json.dump(out, f)
print(f"loss {float(loss):.6f} grad norm {float(norm):.6f}")
