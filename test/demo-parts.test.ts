// The demo's building blocks: the WordNet corpus, the narrowed GPT-2 vocabulary, the reward.
import { describe, expect, it } from 'vitest';
import { buildCorpus, wordnetExamples } from '../lib/demo/corpus.js';
import { sentimentScore } from '../lib/demo/reward.js';
import { NarrowVocab } from '../lib/demo/vocab.js';
import { Tokenizer } from '../lib/index.js';

describe('demo corpus', () => {
  const corpus = buildCorpus();
  it('has tens of thousands of real, clean sentences', () => {
    expect(wordnetExamples().length).toBeGreaterThan(40000);
    expect(corpus.train.length).toBeGreaterThan(25000);
    expect(corpus.heldOut.length).toBeGreaterThan(2500);
    for (const s of [...corpus.train.slice(0, 500), ...corpus.heldOut.slice(0, 500)]) {
      expect(s).not.toMatch(/"|--|\s\s|^\s|\s$/);
      const words = s.split(' ').length;
      expect(words).toBeGreaterThanOrEqual(4);
      expect(words).toBeLessThanOrEqual(20);
    }
    expect(corpus.train).toContain('we were at last able to buy a car');
  });
  it('splits deterministically and without overlap', () => {
    const again = buildCorpus();
    expect(again.heldOut.slice(0, 20)).toEqual(corpus.heldOut.slice(0, 20));
    const train = new Set(corpus.train);
    expect(corpus.heldOut.some((s) => train.has(s))).toBe(false);
  });

  it('narrows GPT-2 to the corpus tokens and round-trips every sentence', () => {
    const vocab = NarrowVocab.fromTexts([...corpus.train, ...corpus.heldOut]);
    expect(vocab.size).toBeGreaterThan(5000);
    expect(vocab.size).toBeLessThan(30000);
    const gpt2 = Tokenizer.gpt2();
    for (const s of corpus.heldOut.slice(0, 300)) {
      const ids = vocab.encode(s)!;
      expect(ids.length).toBe(gpt2.encode(s).length);
      expect(vocab.decode(ids)).toBe(s);
    }
    expect(vocab.encode('zyxwvut qqq')).toBeUndefined();
    expect(vocab.decode([vocab.eosId])).toBe('<|endoftext|>');
    const restored = NarrowVocab.fromGpt2Ids(vocab.gpt2Ids);
    expect(restored.encode(corpus.train[0])).toEqual(vocab.encode(corpus.train[0]));
  });
});

describe('demo reward', () => {
  it('scores positive text above neutral above negative', () => {
    expect(sentimentScore('a wonderful, happy and beautiful day')).toBeGreaterThan(0);
    expect(sentimentScore('the table is made of wood')).toBe(0);
    expect(sentimentScore('a terrible, sad and painful loss')).toBeLessThan(0);
  });
});
