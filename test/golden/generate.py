#!/usr/bin/env python3
"""Golden values for the TDPO loss, from an independent implementation.

The official TDPO code (Zeng et al., 2024: trainers.py `_tdpo_get_batch_logps` and `tdpo_loss`,
and the paper's Appendix B) written out in PyTorch float64, with its two numerical hazards
removed the same way the contract asks: log pi_ref from log_softmax, and q * (log q - log p) = 0
where q = 0. Inputs are float32 values (what the addon takes), stored exactly in the JSON.

Regenerate (Debian's python3-torch; `npm run golden` runs this):
    /usr/bin/python3 test/golden/generate.py
"""
import json
import math
import os

import numpy as np
import torch

torch.manual_seed(20240601)
HERE = os.path.dirname(os.path.abspath(__file__))


def batch_stats(logits, reference_logits, labels):
    """Per row, over labels != -100 (labels already aligned): sums of log-ratios, sequential KL,
    policy log-probs and policy entropy (torch.special.entr: -p log p, 0 at p = 0)."""
    loss_mask = labels != -100
    labels = labels.clone()
    labels[~loss_mask] = 0
    vocab_logps = logits.log_softmax(-1)
    reference_vocab_logps = reference_logits.log_softmax(-1)
    reference_vocab_ps = reference_vocab_logps.exp()
    terms = reference_vocab_ps * (reference_vocab_logps - vocab_logps)
    terms = torch.where(reference_vocab_ps > 0, terms, torch.zeros_like(terms))
    per_position_kl = terms.sum(-1)
    idx = labels.unsqueeze(2)
    per_token_logps = torch.gather(vocab_logps, 2, idx).squeeze(2)
    per_reference_token_logps = torch.gather(reference_vocab_logps, 2, idx).squeeze(2)
    margin = per_token_logps - per_reference_token_logps
    zero = torch.zeros_like(margin)
    per_position_entropy = torch.special.entr(vocab_logps.detach().exp()).sum(-1)
    return (torch.where(loss_mask, margin, zero).sum(-1),
            torch.where(loss_mask, per_position_kl, zero).sum(-1),
            torch.where(loss_mask, per_token_logps, zero).sum(-1),
            torch.where(loss_mask, per_position_entropy, zero).sum(-1))


def tdpo_loss(chosen_margin, rejected_margin, chosen_kl, rejected_kl, beta, alpha, variant):
    if variant == "dpo":
        logits = chosen_margin - rejected_margin
        chosen_rewards = beta * chosen_margin.detach()
        rejected_rewards = beta * rejected_margin.detach()
    else:
        if variant == "tdpo1":
            logits = chosen_margin - rejected_margin - (rejected_kl - chosen_kl)
        else:
            logits = chosen_margin - rejected_margin - alpha * (rejected_kl - chosen_kl.detach())
        chosen_rewards = beta * (chosen_margin + chosen_kl).detach()
        rejected_rewards = beta * (rejected_margin + rejected_kl).detach()
    losses = -torch.nn.functional.logsigmoid(beta * logits)
    return losses, chosen_rewards, rejected_rewards


def make_case(name, B, T, V, variant, beta=0.1, alpha=0.5, scale=3.0, prompt=2, full_mask_row=None,
              neg_inf=0):
    z = (torch.randn(B, T, V) * scale).float()
    r = (z + torch.randn(B, T, V) * scale * 0.5).float()  # a reference near the policy, as in training
    labels = torch.randint(0, V, (B, T), dtype=torch.int32)
    labels[:, :prompt] = -100
    if full_mask_row is not None:
        labels[full_mask_row, :] = -100
    for _ in range(neg_inf):  # banned tokens: -inf in both models, never a label
        b, t, v = [int(torch.randint(0, n, ())) for n in (B, T, V)]
        if labels[b, t] == v:
            v = (v + 1) % V
        z[b, t, v] = -math.inf
        r[b, t, v] = -math.inf
    zd = z.double().requires_grad_(True)
    margin, kl, logps, entropy = batch_stats(zd, r.double(), labels.long())
    P = B // 2
    losses, cr, rr = tdpo_loss(margin[:P], margin[P:], kl[:P], kl[P:], beta, alpha, variant)
    loss = losses.mean()
    loss.backward()
    # Inputs: the shortest decimal that reads back as the same float32. Outputs: 12 significant
    # digits, far below the tolerances the tests use.
    f32 = lambda t: [float(repr(np.float32(x))) if math.isfinite(x) else "-Infinity"
                     for x in t.flatten().tolist()]
    f64 = lambda t: [float("%.12g" % x) for x in t.detach().flatten().tolist()]
    return {
        "name": name, "shape": [B, T, V], "options": {"variant": variant, "beta": beta, "alpha": alpha},
        "policyLogits": f32(z), "referenceLogits": f32(r), "labels": labels.flatten().tolist(),
        "loss": float(loss), "losses": f64(losses), "chosenRewards": f64(cr),
        "rejectedRewards": f64(rr), "chosenLogratio": f64(margin[:P]),
        "rejectedLogratio": f64(margin[P:]), "chosenKl": f64(kl[:P]), "rejectedKl": f64(kl[P:]),
        "chosenLogps": f64(logps[:P]), "rejectedLogps": f64(logps[P:]),
        "chosenEntropy": f64(entropy[:P]), "rejectedEntropy": f64(entropy[P:]),
        "grad": f64(zd.grad),
    }


cases = [
    make_case("tdpo2 default", 4, 6, 37, "tdpo2"),
    make_case("tdpo1", 4, 6, 37, "tdpo1"),
    make_case("dpo", 4, 6, 37, "dpo"),
    make_case("tdpo2 alpha=1.5 beta=0.5", 4, 5, 29, "tdpo2", beta=0.5, alpha=1.5),
    make_case("tdpo2 fully masked row and -inf", 6, 5, 41, "tdpo2", full_mask_row=4, neg_inf=12),
    make_case("tdpo1 large logits", 2, 4, 53, "tdpo1", scale=1e4, prompt=1),
    make_case("tdpo2 one position, vocab not a multiple of 16", 2, 1, 131, "tdpo2", prompt=0),
]
with open(os.path.join(HERE, "loss-golden.json"), "w") as f:
    json.dump({"generator": "test/golden/generate.py", "torch": torch.__version__, "cases": cases}, f)
print(f"wrote {len(cases)} cases to test/golden/loss-golden.json")
