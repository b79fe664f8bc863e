"""A plain PyTorch TDPO2 + RMSprop step, as the official TDPO code computes it, for the GPU bench.

The baseline `tdpo bench --train` is compared against on the same GPU in the same check: the
policy and the reference are Hugging Face GPTNeoXForCausalLM models (random weights) at a given
shape; the loss is the official code's `_tdpo_get_batch_logps` + `tdpo_loss` over materialised
[B, T, V] float32 logits, its gradient by autograd. bfloat16 as the official code trains it:
float32 parameters and optimizer state, the forward under torch.autocast(bfloat16).

  python3 torch_tdpo_step.py --shape pythia-1b --pairs 8 --seq 512 --runs 3 [--device cuda]
  python3 torch_tdpo_step.py --shape pythia-1b --seq 512 --largest    # the largest pairs that fit

Prints one JSON line: step times, the median, and the CUDA caching allocator's peak.
"""
import argparse
import gc
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

SHAPES = {
    # EleutherAI/pythia-1b's config.json.
    "pythia-1b": dict(vocab_size=50304, max_position_embeddings=2048, hidden_size=2048, num_hidden_layers=16,
                      num_attention_heads=8, intermediate_size=8192, rotary_pct=0.25, rotary_emb_base=10000,
                      use_parallel_residual=True, layer_norm_eps=1e-5, hidden_act="gelu", tie_word_embeddings=False),
    # For trying the script on a CPU.
    "tiny": dict(vocab_size=512, max_position_embeddings=128, hidden_size=64, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=256, rotary_pct=0.25, tie_word_embeddings=False),
}


def tdpo_get_batch_logps(logits, reference_logits, labels):
    """The official code's _tdpo_get_batch_logps (average_log_prob=False)."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    reference_logits = reference_logits[:, :-1, :]
    loss_mask = labels != -100
    labels[labels == -100] = 0
    vocab_logps = logits.log_softmax(-1)
    reference_vocab_ps = reference_logits.softmax(-1)
    reference_vocab_logps = reference_vocab_ps.log()
    per_position_kl = (reference_vocab_ps * (reference_vocab_logps - vocab_logps)).sum(-1)
    per_token_logps = torch.gather(vocab_logps, dim=2, index=labels.unsqueeze(2)).squeeze(2)
    per_reference_token_logps = torch.gather(reference_vocab_logps, dim=2, index=labels.unsqueeze(2)).squeeze(2)
    logps_margin = per_token_logps - per_reference_token_logps
    return (logps_margin * loss_mask).sum(-1), (per_position_kl * loss_mask).sum(-1)


def tdpo2_loss(margin, kl, pairs, alpha=0.5, beta=0.1):
    """The official tdpo_loss with if_tdpo2=True; rows are [chosen..., rejected...]."""
    chosen_margin, rejected_margin = margin[:pairs], margin[pairs:]
    chosen_kl, rejected_kl = kl[:pairs], kl[pairs:]
    logits = (chosen_margin - rejected_margin) - alpha * (rejected_kl - chosen_kl.detach())
    return -F.logsigmoid(beta * logits).mean()


def make(shape, device, seed):
    torch.manual_seed(seed)
    config = GPTNeoXConfig(**SHAPES[shape])
    # Built on the device: a 1B model's random init takes seconds there and tens of seconds on the
    # CPU, and the --largest search builds one pair of models per size.
    with torch.device(device):
        policy = GPTNeoXForCausalLM(config)
        reference = GPTNeoXForCausalLM(config)
    reference.load_state_dict(policy.state_dict())
    reference.eval().requires_grad_(False)
    return policy, reference, config


def measure(shape, pairs, seq, runs, device, dtype, seed=0):
    policy, reference, config = make(shape, device, seed)
    opt = torch.optim.RMSprop(policy.parameters(), lr=5e-6)
    g = torch.Generator().manual_seed(seed + 2)
    ids = torch.randint(0, config.vocab_size, (2 * pairs, seq), generator=g).to(device)
    labels = ids.clone()
    labels[:, : seq // 4] = -100  # a quarter prompt, as tdpo bench --train
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def step():
        with autocast:
            logits = policy(ids).logits.to(torch.float32)
            with torch.no_grad():
                ref_logits = reference(ids).logits.to(torch.float32)
        margin, kl = tdpo_get_batch_logps(logits, ref_logits, labels)
        loss = tdpo2_loss(margin, kl, pairs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    warmup_loss = step()
    times = []
    for _ in range(runs):
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    return dict(pairs=pairs, seq=seq, timesMs=times, medianMs=statistics.median(times), devicePeakBytes=peak,
                warmupLoss=warmup_loss, parameters=sum(p.numel() for p in policy.parameters()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="pythia-1b", choices=sorted(SHAPES))
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--largest", action="store_true", help="double --pairs until a step runs out of memory")
    a = ap.parse_args()
    if not a.largest:
        print(json.dumps(dict(torch=torch.__version__, **measure(a.shape, a.pairs, a.seq, a.runs, a.device, a.dtype))))
        return
    fits, pairs = None, a.pairs
    while pairs <= 4096:
        # Nothing of the previous size may stay allocated: its peak would count against this one.
        gc.collect()
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()
        try:
            fits = measure(a.shape, pairs, a.seq, 3, a.device, a.dtype)
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError, or cuBLAS failing to allocate
            if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower() or "CUBLAS_STATUS_ALLOC_FAILED" in str(e):
                break
            raise
        pairs *= 2
    print(json.dumps(dict(torch=torch.__version__, largestPairs=fits and fits["pairs"], atLargest=fits, firstFailing=pairs)))


if __name__ == "__main__":
    main()
