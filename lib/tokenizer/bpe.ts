// Byte-level BPE of one pre-token: merges applied lowest rank first, leftmost first among equal
// ranks (what tiktoken, tokenizers and GPT-2's encoder.py all compute), with a cache for the short
// pieces ordinary text repeats.
import { HeapMerger, MAX_RUN } from './bpe-heap.js';
import type { IdSink } from './id-sink.js';
import type { PairTable } from './pair-table.js';

/**
 * Pre-tokens longer than this (64 KiB of one class of character: no real text has them) are
 * merged in chunks cut between characters: their ids may then differ from tokenizers' next to a
 * cut (decoding is still exact), but the heap stays in cache, which is what keeps a megabyte of
 * digits above 1 MB/s (one heap of 2^18 entries ran at half the speed), and scratch memory is
 * bounded whatever the input.
 */
export const MAX_PIECE_BYTES = MAX_RUN;
const CACHE_MAX_CHARS = 64;
const CACHE_MAX_ENTRIES = 1 << 16;
/** Up to this many bytes, tiktoken's scan for the best pair beats a heap. */
const SMALL_PIECE = 48;

export interface BpeModel {
  /** Token of each single byte, -1 where the vocabulary has none. */
  byteIds: Int32Array;
  /** (left id, right id) → rank, the merge's priority (lower first). */
  pairs: PairTable;
  /** rank → id of the merged token. */
  mergeResult: Int32Array;
  /** With `ignore_merges` (Llama 3): a piece that is a whole token is that token. Keys: bytes as latin1. */
  wholeTokens?: Map<string, number>;
  maxTokenBytes: number;
  /** Emitted for a byte without a token; undefined: the byte is dropped (as tokenizers does). */
  unkId?: number;
}

export class ByteBpe {
  readonly #m: BpeModel;
  readonly #pair: (a: number, b: number) => number;
  // Most pieces are one token: a number costs no allocation (and a small array far less than an
  // Int32Array).
  readonly #cache = new Map<string, number | number[]>();
  readonly #bytes = new Uint8Array(MAX_PIECE_BYTES + 4);
  readonly #syms = new Int32Array(MAX_PIECE_BYTES + 4);
  readonly #rank = new Int32Array(SMALL_PIECE);
  #heap: HeapMerger | undefined;
  #end = 0;

  constructor(model: BpeModel) {
    this.#m = model;
    this.#pair = model.pairs.getter();
  }

  /** Appends the ids of s[from, to) to `out`. */
  encodePiece(s: string, from: number, to: number, out: IdSink): void {
    const m = this.#m;
    const c = s.charCodeAt(from);
    if (to - from === 1 && c < 0x80) {
      const id = m.byteIds[c];
      if (id >= 0) out.push(id);
      else if (m.unkId !== undefined) out.push(m.unkId);
      return;
    }
    const short = to - from <= CACHE_MAX_CHARS;
    const key = short ? s.slice(from, to) : '';
    if (short) {
      const hit = this.#cache.get(key);
      if (typeof hit === 'number') return out.push(hit);
      if (hit) return out.pushAll(hit);
    }
    const start = out.length;
    for (let i = from; i < to; i = this.#end) {
      const n = this.#utf8(s, i, to);
      const whole = i === from && this.#end === to && m.wholeTokens && n <= m.maxTokenBytes ? m.wholeTokens.get(latin1(this.#bytes, n)) : undefined;
      if (whole !== undefined) out.push(whole);
      else if (n <= SMALL_PIECE) this.#mergeSmall(n, out);
      else (this.#heap ??= new HeapMerger()).merge(this.#syms, n, { pair: this.#pair, mergeResult: m.mergeResult, unkId: m.unkId }, out);
    }
    if (short) {
      if (this.#cache.size >= CACHE_MAX_ENTRIES) this.#cache.clear();
      this.#cache.set(key, out.length - start === 1 ? out.at(start) : out.list(start));
    }
  }

  /**
   * UTF-8 of s[from, to) (lone surrogates as U+FFFD, as TextEncoder writes them) up to
   * MAX_PIECE_BYTES, whole characters only; also their initial symbols. Sets #end to the
   * first character left out; returns the byte count.
   */
  #utf8(s: string, from: number, to: number): number {
    const b = this.#bytes;
    let n = 0, i = from;
    for (; i < to && n <= MAX_PIECE_BYTES - 4; i++) {
      let c = s.charCodeAt(i);
      if (c < 0x80) b[n++] = c;
      else if (c < 0x800) {
        b[n++] = 0xc0 | (c >> 6);
        b[n++] = 0x80 | (c & 63);
      } else {
        if (c >= 0xd800 && c <= 0xdfff) {
          const d = i + 1 < to ? s.charCodeAt(i + 1) : 0;
          if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
            c = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
            i++;
            b[n++] = 0xf0 | (c >> 18);
            b[n++] = 0x80 | ((c >> 12) & 63);
            b[n++] = 0x80 | ((c >> 6) & 63);
            b[n++] = 0x80 | (c & 63);
            continue;
          }
          c = 0xfffd;
        }
        b[n++] = 0xe0 | (c >> 12);
        b[n++] = 0x80 | ((c >> 6) & 63);
        b[n++] = 0x80 | (c & 63);
      }
    }
    this.#end = i;
    const syms = this.#syms, byteIds = this.#m.byteIds;
    for (let k = 0; k < n; k++) syms[k] = byteIds[b[k]];
    return n;
  }

  /** tiktoken's algorithm: scan for the lowest-ranked pair, merge it, until none is left. */
  #mergeSmall(n: number, out: IdSink): void {
    const m = this.#m, pair = this.#pair, tok = this.#syms, rank = this.#rank;
    for (let i = 0; i + 1 < n; i++) rank[i] = pair(tok[i], tok[i + 1]);
    for (;;) {
      let best = -1, bestRank = 0x7fffffff;
      for (let i = 0; i + 1 < n; i++) if (rank[i] >= 0 && rank[i] < bestRank) [best, bestRank] = [i, rank[i]];
      if (best < 0) break;
      tok[best] = m.mergeResult[bestRank];
      n--;
      for (let i = best + 1; i < n; i++) {
        tok[i] = tok[i + 1];
        rank[i] = rank[i + 1];
      }
      if (best + 1 < n) rank[best] = pair(tok[best], tok[best + 1]);
      if (best > 0) rank[best - 1] = pair(tok[best - 1], tok[best]);
    }
    for (let i = 0; i < n; i++) {
      if (tok[i] >= 0) out.push(tok[i]);
      else if (m.unkId !== undefined) out.push(m.unkId);
    }
  }
}

function latin1(b: Uint8Array, n: number): string {
  return String.fromCharCode.apply(null, b.subarray(0, n) as unknown as number[]);
}
