// A byte-level BPE tokenizer end to end, in the order tokenizers.js runs one (so that its ids are
// the same): added tokens split out of the raw text, normalizer, added tokens split out of the
// normalized text, pre-tokenizer, BPE; decoding maps ids back to bytes, added tokens verbatim.
import { codedError } from '../errors.js';
import { ByteBpe, type BpeModel } from './bpe.js';
import { IdSink } from './id-sink.js';
import type { Normalize } from './normalizer.js';
import type { Stage } from './pretokenize.js';
import { classTable, JS_SPACE } from './unicode.js';

const SPLIT_WORK_PER_CHAR = 64;

export interface AddedToken {
  id: number;
  content: string;
  lstrip: boolean;
  rstrip: boolean;
  /** Matched in the normalized text (else in the raw text). */
  normalized: boolean;
}

export interface PipelineSpec {
  model: BpeModel;
  /** Bytes of each vocabulary id (undefined: no such id). */
  tokenBytes: Array<Uint8Array | undefined>;
  added: AddedToken[];
  normalizer: Normalize | null;
  /** null: each text section is one piece. */
  preTokenizer: Stage | null;
  /** tokenizer_config.json's remove_space. */
  removeSpace?: boolean;
}

interface TrieNode {
  next: Map<number, TrieNode>;
  token?: AddedToken;
  /** Length of the text the token stands for here (its normalized form, in the normalized trie). */
  length?: number;
}
interface Section {
  from: number;
  to: number;
  token?: AddedToken;
}

export class BytePipeline {
  readonly #spec: PipelineSpec;
  readonly #bpe: ByteBpe;
  readonly #raw: TrieNode = { next: new Map() };
  readonly #norm: TrieNode = { next: new Map() };
  readonly #byContent = new Map<string, AddedToken>();
  readonly #byId = new Map<number, string>();
  readonly #decoder = new TextDecoder('utf-8', { ignoreBOM: true });

  constructor(spec: PipelineSpec) {
    this.#spec = spec;
    this.#bpe = new ByteBpe(spec.model);
    for (const t of spec.added) {
      const content = t.normalized && spec.normalizer ? spec.normalizer(t.content) : t.content;
      let node = t.normalized && spec.normalizer ? this.#norm : this.#raw;
      for (let i = 0; i < content.length; i++) {
        const c = content.charCodeAt(i);
        let child = node.next.get(c);
        if (!child) node.next.set(c, (child = { next: new Map() }));
        node = child;
      }
      if (content.length) [node.token, node.length] = [t, content.length];
      this.#byContent.set(t.content, t).set(content, t);
      this.#byId.set(t.id, t.content);
    }
  }

  /** Whether `decode` knows the id. */
  has(id: number): boolean {
    return this.#byId.has(id) || this.#spec.tokenBytes[id] !== undefined;
  }

  encode(text: string): Int32Array {
    const out = new IdSink();
    for (const sec of this.#split(this.#raw, text, 0, text.length)) {
      if (sec.token) {
        out.push(sec.token.id);
        continue;
      }
      if (sec.from >= sec.to) continue;
      let t = text.slice(sec.from, sec.to);
      const whole = this.#byContent.get(t);
      if (whole) {
        out.push(whole.id);
        continue;
      }
      if (this.#spec.removeSpace) t = t.trim().split(/\s+/).join(' ');
      if (this.#spec.normalizer) t = this.#spec.normalizer(t);
      for (const sub of this.#norm.next.size ? this.#split(this.#norm, t, 0, t.length) : [{ from: 0, to: t.length }]) {
        if (sub.token) out.push(sub.token.id);
        else if (sub.from < sub.to) this.#pieces(t, sub.from, sub.to, out);
      }
    }
    return out.slice(0);
  }

  #pieces(s: string, from: number, to: number, out: IdSink): void {
    const pre = this.#spec.preTokenizer;
    if (!pre) return this.#bpe.encodePiece(s, from, to, out);
    pre(s, from, to, (t, a, b) => {
      if (a < b) this.#bpe.encodePiece(t, a, b, out);
    });
  }

  /**
   * Added tokens, longest match first at each position (as tokenizers.js finds them); their
   * lstrip/rstrip trim the neighbours. The trie walk from each position is as long as the text
   * follows some token: a file whose tokens share long prefixes with the text would make that
   * quadratic, so the work is bounded as in regex.ts.
   */
  #split(root: TrieNode, s: string, from: number, to: number): Section[] {
    const out: Section[] = [];
    let start = from;
    if (root.next.size) {
      let budget = SPLIT_WORK_PER_CHAR * (to - from) + (1 << 20);
      for (let i = from; i < to; ) {
        let node: TrieNode | undefined = root;
        let match: TrieNode | undefined;
        let j = i;
        for (; j < to && (node = node.next.get(s.charCodeAt(j))); j++) if (node.token) match = node;
        if ((budget -= j - i + 1) < 0) {
          throw codedError('RangeError', 'ERR_TDPO_TOKENIZER',
            `the added tokens need more than linear work to find in this input (${to - from} characters); refusing rather than stalling`);
        }
        if (!match) {
          i++;
          continue;
        }
        if (i > start) out.push({ from: start, to: i });
        out.push({ from: i, to: i + match.length!, token: match.token });
        i = start = i + match.length!;
      }
    }
    if (start < to) out.push({ from: start, to });
    const space = classTable();
    const isSpace = (k: number) => (space[s.charCodeAt(k)] & JS_SPACE) !== 0;
    out.forEach((sec, k) => {
      if (!sec.token) return;
      const before = out[k - 1], after = out[k + 1];
      if (sec.token.lstrip && before && !before.token) while (before.to > before.from && isSpace(before.to - 1)) before.to--;
      if (sec.token.rstrip && after && !after.token) while (after.from < after.to && isSpace(after.from)) after.from++;
    });
    return out;
  }

  decode(ids: ArrayLike<number>): string {
    const bytes = this.#spec.tokenBytes;
    let buf = new Uint8Array(256), n = 0, text = '';
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k];
      const added = this.#byId.get(id);
      if (added !== undefined) {
        text += this.#decoder.decode(buf.subarray(0, n)) + added;
        n = 0;
        continue;
      }
      const b = bytes[id]!;
      if (n + b.length > buf.length) {
        const bigger = new Uint8Array(Math.max(buf.length * 2, n + b.length));
        bigger.set(buf.subarray(0, n));
        buf = bigger;
      }
      buf.set(b, n);
      n += b.length;
    }
    return text + this.#decoder.decode(buf.subarray(0, n));
  }
}
