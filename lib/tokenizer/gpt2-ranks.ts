// Tokenizer.gpt2(): GPT-2's BPE from the ranks js-tiktoken ships (tiktoken's `gpt2` encoding), run
// by our pipeline rather than js-tiktoken's encoder, whose merge loop is quadratic in a piece.
import { createRequire } from 'node:module';
import path from 'node:path';
import packageRoot from '../package-root.cjs';
import { gpt2Matcher } from './gpt2-split.js';
import { PairTable } from './pair-table.js';
import { BytePipeline } from './pipeline.js';

// The ranks (0.5 MB of source) load on first use, not with the package.
const requireFromRoot = createRequire(path.join(packageRoot, 'package.json'));

interface TiktokenRanks {
  bpe_ranks: string;
  special_tokens: Record<string, number>;
  explicit_n_vocab?: number;
}

export interface Loaded {
  pipeline: BytePipeline;
  eosTokenId: number | undefined;
  vocabSize: number;
}

export function loadGpt2(): Loaded {
  const mod = requireFromRoot('js-tiktoken/ranks/gpt2') as TiktokenRanks | { default: TiktokenRanks };
  const ranks = 'default' in mod ? mod.default : mod;
  // "! <first rank> <base64 token> <base64 token>...", one line per run of consecutive ranks
  const byBytes = new Map<string, number>();
  const tokenBytes: Uint8Array[] = [];
  for (const line of ranks.bpe_ranks.split('\n')) {
    const [, offset, ...tokens] = line.split(' ');
    if (offset === undefined) continue;
    tokens.forEach((t, k) => {
      const b = Buffer.from(t, 'base64');
      tokenBytes[+offset + k] = b;
      byBytes.set(b.toString('latin1'), +offset + k);
    });
  }
  // tiktoken merges the adjacent pair whose concatenation has the lowest rank; as a merge table:
  // every split of every token into two tokens, ranked by the whole. The rank is the id.
  const pairs = new PairTable(byBytes.size * 2);
  let maxBytes = 0;
  for (const [key, id] of byBytes) {
    maxBytes = Math.max(maxBytes, key.length);
    for (let k = 1; k < key.length; k++) {
      const left = byBytes.get(key.slice(0, k)), right = byBytes.get(key.slice(k));
      if (left !== undefined && right !== undefined) pairs.set(left, right, id);
    }
  }
  const byteIds = new Int32Array(256).map((_, b) => byBytes.get(String.fromCharCode(b)) ?? -1);
  const mergeResult = new Int32Array(tokenBytes.length).map((_, i) => i);
  const vocabSize = ranks.explicit_n_vocab ?? Math.max(tokenBytes.length, ...Object.values(ranks.special_tokens).map((i) => i + 1));
  const gpt2 = gpt2Matcher('js');
  const pipeline = new BytePipeline({
    model: { byteIds, pairs, mergeResult, maxTokenBytes: maxBytes },
    tokenBytes,
    // "<|endoftext|>" in the text is the special token, as GPT-2's tokenizer.json treats it.
    added: Object.entries(ranks.special_tokens).map(([content, id]) => ({ id, content, lstrip: false, rstrip: false, normalized: false })),
    normalizer: null,
    preTokenizer: (s, from, to, emit) => gpt2(s, from, to, (a, b) => emit(s, a, b)),
  });
  return { pipeline, eosTokenId: ranks.special_tokens['<|endoftext|>'], vocabSize };
}
