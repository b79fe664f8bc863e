// Tokenizers for chat tests, written into a folder as Hugging Face saves them: a byte-level BPE
// tokenizer.json (the 256 byte tokens, a few merges, the special tokens as added tokens) and a
// tokenizer_config.json with the chat template of one model family. The templates are the
// families' own (Meta-Llama-3-8B-Instruct, Qwen2-7B-Instruct, SmolLM-135M-Instruct).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const templates = {
  llama3:
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
  qwen2:
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
  smollm:
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
} as const;

export type Family = keyof typeof templates;

const SPECIALS: Record<Family, { bos?: string; eos: string; added: string[]; addBos: boolean }> = {
  // Llama 3 sets no add_bos_token: its tokenizer.json's post_processor puts <|begin_of_text|> first.
  llama3: { bos: '<|begin_of_text|>', eos: '<|eot_id|>', added: ['<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'], addBos: false },
  qwen2: { eos: '<|im_end|>', added: ['<|endoftext|>', '<|im_start|>', '<|im_end|>'], addBos: false },
  smollm: { bos: '<|im_start|>', eos: '<|im_end|>', added: ['<|endoftext|>', '<|im_start|>', '<|im_end|>'], addBos: false },
};

// GPT-2's printable stand-ins for bytes, as tokenizer.json vocabularies spell them.
const BYTE_CHARS: string[] = (() => {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let extra = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCharCode(printable(b) ? b : 256 + extra++));
})();

/** The vocabulary size of the fixture tokenizers: 256 bytes, 4 merges, then the added tokens. */
export const vocabSizeOf = (family: Family) => 256 + 4 + SPECIALS[family].added.length;

/**
 * Writes tokenizer.json and tokenizer_config.json for `family` into `dir`; `config` overrides
 * fields of tokenizer_config.json (chat_template: undefined removes it).
 */
export function writeChatTokenizer(dir: string, family: Family, config: Record<string, unknown> = {}): { eos: number; bos: number | undefined; added: Record<string, number> } {
  mkdirSync(dir, { recursive: true });
  const vocab: Record<string, number> = {};
  BYTE_CHARS.forEach((c, i) => (vocab[c] = i));
  const merges = [['h', 'e'], ['l', 'l'], ['he', 'll'], ['Ġ', 't']];
  merges.forEach(([a, b], i) => (vocab[a + b] = 256 + i));
  const s = SPECIALS[family];
  const added: Record<string, number> = {};
  const addedTokens = s.added.map((content, i) => {
    added[content] = 260 + i;
    return { id: 260 + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
  });
  const json = {
    version: '1.0',
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor:
      family === 'llama3'
        ? {
            type: 'Sequence',
            processors: [
              { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
              {
                type: 'TemplateProcessing',
                single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
                pair: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<|begin_of_text|>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
                special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [260], tokens: ['<|begin_of_text|>'] } },
              },
            ],
          }
        : null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges: merges.map(([a, b]) => `${a} ${b}`) },
  };
  writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
  const tc: Record<string, unknown> = { bos_token: s.bos ?? null, eos_token: s.eos, chat_template: templates[family], ...(s.addBos ? { add_bos_token: true } : {}), ...config };
  for (const [k, v] of Object.entries(tc)) if (v === undefined) delete tc[k];
  writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tc));
  return { eos: added[s.eos], bos: s.bos ? added[s.bos] : undefined, added };
}
