#!/usr/bin/env node
// A conversational preference set and a chat tokenizer for a tiny Llama-shaped model, written as
// Hugging Face writes them, so that examples/chat/config.yaml trains TDPO2 end to end on
// data.format: conversation (TRL's {prompt, chosen, rejected} lists of messages).
//   tokenizer/tokenizer.json          byte-level BPE: the 256 bytes, a few merges, ChatML's tokens
//   tokenizer/tokenizer_config.json   bos/eos and SmolLM's ChatML chat template
//   data/train.jsonl, data/eval.jsonl the rule to learn: the chosen reply agrees and names the
//                                     thing asked for ("Sure, the red cup."); the rejected one
//                                     refuses or names another thing.
// Usage: node examples/chat/make-data.mjs [outDir]   (default: examples/chat)
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const out = process.argv[2] ?? path.dirname(fileURLToPath(import.meta.url));

// GPT-2's printable stand-ins for bytes, as byte-level tokenizer.json vocabularies spell them.
let extra = 0;
const printable = (b) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
const byteChars = Array.from({ length: 256 }, (_, b) => String.fromCharCode(printable(b) ? b : 256 + extra++));
const vocab = Object.fromEntries(byteChars.map((c, i) => [c, i]));
const merges = [['Ġ', 't'], ['h', 'e'], ['Ġt', 'he'], ['S', 'u'], ['Su', 'r'], ['Sur', 'e'], ['N', 'o']];
for (const [a, b] of merges) vocab[a + b] = Object.keys(vocab).length;
const specials = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'];
const added = specials.map((content, i) => ({ id: Object.keys(vocab).length + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
const tokenizer = {
  version: '1.0',
  added_tokens: added,
  normalizer: null,
  pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: null,
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges: merges.map((m) => m.join(' ')) },
};
const chatTemplate =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
mkdirSync(path.join(out, 'tokenizer'), { recursive: true });
writeFileSync(path.join(out, 'tokenizer', 'tokenizer.json'), JSON.stringify(tokenizer));
writeFileSync(path.join(out, 'tokenizer', 'tokenizer_config.json'), JSON.stringify({ bos_token: '<|im_start|>', eos_token: '<|im_end|>', add_bos_token: false, chat_template: chatTemplate }, null, 2));

let s = 2024;
const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296);
const pick = (xs) => xs[Math.floor(rand() * xs.length)];
const colours = ['red', 'blue', 'green', 'white', 'black', 'yellow'];
const things = ['cup', 'book', 'lamp', 'key', 'hat', 'ball'];
const pair = () => {
  const want = `${pick(colours)} ${pick(things)}`;
  let other = want;
  while (other === want) other = `${pick(colours)} ${pick(things)}`;
  const rejected = rand() < 0.5 ? `No, I will not pass the ${want}.` : `Sure, the ${other}.`;
  return JSON.stringify({
    prompt: [{ role: 'user', content: `Could you pass me the ${want}?` }],
    chosen: [{ role: 'assistant', content: `Sure, the ${want}.` }],
    rejected: [{ role: 'assistant', content: rejected }],
  });
};
mkdirSync(path.join(out, 'data'), { recursive: true });
writeFileSync(path.join(out, 'data', 'train.jsonl'), `${Array.from({ length: 512 }, pair).join('\n')}\n`);
writeFileSync(path.join(out, 'data', 'eval.jsonl'), `${Array.from({ length: 64 }, pair).join('\n')}\n`);
console.log(`wrote ${out}/tokenizer (vocabulary ${Object.keys(vocab).length + specials.length}), data/train.jsonl (512 pairs) and data/eval.jsonl (64 pairs)`);
