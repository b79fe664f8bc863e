#!/usr/bin/env node
// A synthetic preference set with a learnable rule, pre-tokenised (data.format: tokenized):
// prompts are random ids; the chosen response uses even ids, the rejected one odd ids. A model
// that learns the rule ranks every held-out pair right (rewards/accuracies -> 1).
// Usage: node examples/synthetic/make-data.mjs [outDir]   (default: examples/synthetic/data)
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const out = process.argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), 'data');
let s = 12345;
const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296);
const VOCAB = 64; // ids 0 (pad) and 1 (EOS) are reserved
const token = (parity) => 2 + 2 * Math.floor(rand() * ((VOCAB - 2) / 2)) + parity;
const pair = () => JSON.stringify({
  prompt_ids: Array.from({ length: 4 + Math.floor(rand() * 8) }, () => 2 + Math.floor(rand() * (VOCAB - 2))),
  chosen_ids: Array.from({ length: 3 + Math.floor(rand() * 6) }, () => token(0)),
  rejected_ids: Array.from({ length: 3 + Math.floor(rand() * 6) }, () => token(1)),
});
mkdirSync(out, { recursive: true });
writeFileSync(path.join(out, 'train.jsonl'), `${Array.from({ length: 2048 }, pair).join('\n')}\n`);
writeFileSync(path.join(out, 'eval.jsonl'), `${Array.from({ length: 256 }, pair).join('\n')}\n`);
console.log(`wrote ${out}/train.jsonl (2048 pairs) and eval.jsonl (256 pairs)`);
