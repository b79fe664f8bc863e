#!/usr/bin/env python3
"""Logits from Hugging Face transformers itself, for test/transformers.test.ts.

Reads a JSON list of {dir, inputIds, shape, attentionMask?} on stdin, loads each folder with
AutoModelForCausalLM.from_pretrained (the folders are ones tdpo saved), and writes a JSON list of
{transformers, logits} with the flattened float32 logits to the file named by its argument (not
stdout, where libraries print warnings). Runs wherever transformers is installed
(the GPU machine has it; the development machine does not, and the test is skipped there).
"""
import json
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

out = []
for item in json.load(sys.stdin):
    model = AutoModelForCausalLM.from_pretrained(item["dir"]).float().eval()
    ids = torch.tensor(item["inputIds"], dtype=torch.long).view(*item["shape"])
    kwargs = {}
    if item.get("attentionMask") is not None:
        kwargs["attention_mask"] = torch.tensor(item["attentionMask"], dtype=torch.long).view(*item["shape"])
    with torch.no_grad():
        logits = model(input_ids=ids, **kwargs).logits
    out.append({"transformers": transformers.__version__, "logits": logits.float().flatten().tolist()})
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
