// GPT-2's tokenizer narrowed to the tokens a corpus uses, so that a small model's output layer is
// thousands of rows instead of 50,257 (the demo's report says so). Local ids are dense: 0 is
// GPT-2's end-of-text token, then the kept tokens in order of GPT-2 id.
import { Tokenizer } from '../index.js';

const GPT2_EOS = 50256;

export class NarrowVocab {
  readonly size: number;
  readonly eosId = 0;
  readonly #toLocal: Map<number, number>;
  readonly #toGpt2: Int32Array;
  readonly #tokenizer: Tokenizer;

  private constructor(gpt2Ids: number[], tokenizer: Tokenizer) {
    this.#tokenizer = tokenizer;
    this.#toGpt2 = Int32Array.from([GPT2_EOS, ...gpt2Ids]);
    this.#toLocal = new Map(Array.from(this.#toGpt2, (g, i) => [g, i]));
    this.size = this.#toGpt2.length;
  }

  /**
   * The vocabulary of `texts` under GPT-2's tokenizer: every token they use, or the `maxTokens`
   * most frequent (ties to the lower GPT-2 id); texts with other tokens then do not encode.
   */
  static fromTexts(texts: Iterable<string>, tokenizer = Tokenizer.gpt2(), maxTokens = Infinity): NarrowVocab {
    const counts = new Map<number, number>();
    for (const t of texts) for (const id of tokenizer.encode(t)) if (id !== GPT2_EOS) counts.set(id, (counts.get(id) ?? 0) + 1);
    const kept = [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, maxTokens);
    return new NarrowVocab(kept.map(([id]) => id).sort((a, b) => a - b), tokenizer);
  }

  /** The GPT-2 ids this vocabulary maps to, for saving alongside a model. */
  get gpt2Ids(): Int32Array {
    return this.#toGpt2.slice();
  }

  static fromGpt2Ids(ids: ArrayLike<number>, tokenizer = Tokenizer.gpt2()): NarrowVocab {
    return new NarrowVocab(Array.from(ids).slice(1), tokenizer);
  }

  /** Local ids of `text`; undefined when it uses a token outside the vocabulary. */
  encode(text: string): Int32Array | undefined {
    const g = this.#tokenizer.encode(text);
    const out = new Int32Array(g.length);
    for (let i = 0; i < g.length; i++) {
      const l = this.#toLocal.get(g[i]);
      if (l === undefined) return undefined;
      out[i] = l;
    }
    return out;
  }

  decode(ids: ArrayLike<number>): string {
    return this.#tokenizer.decode(Array.from(ids, (i) => this.#toGpt2[i]));
  }
}
