// BPE over a long run of bytes in O(n log n): a linked list of symbols and a min-heap of the pairs
// between neighbours. Scanning all pairs for the best one after each merge (js-tiktoken) is
// quadratic, and took seconds on 8 KB of letters.
import type { IdSink } from './id-sink.js';

/** Longest run merged at once (bpe.ts cuts longer pieces): node offsets fit in the heap key. */
export const MAX_RUN = 1 << 16;

export interface MergeTables {
  pair: (left: number, right: number) => number;
  mergeResult: Int32Array;
  unkId?: number;
}

export class HeapMerger {
  readonly #tok = new Int32Array(MAX_RUN);
  readonly #next = new Int32Array(MAX_RUN);
  readonly #prev = new Int32Array(MAX_RUN);
  readonly #rank = new Int32Array(MAX_RUN);
  readonly #heap = new Float64Array(3 * MAX_RUN); // each merge adds at most two entries

  /**
   * Merges the n symbols `first` (token ids; -1: a byte without one) and appends the result.
   * Nodes are indexed by their first symbol; rank[i] is the rank of the pair that starts at node
   * i (-1: none, or node i merged away). The heap holds rank * MAX_RUN + i, so that the smallest
   * key is the lowest rank, leftmost (tiktoken's and tokenizers' order). Entries that no longer
   * match rank[i] are stale and skipped: a merge at i changes the ranks of the pairs at i and
   * before it, and the pair at i cannot keep its rank (a rank makes one token).
   */
  merge(first: Int32Array, n: number, t: MergeTables, out: IdSink): void {
    const tok = this.#tok, next = this.#next, prev = this.#prev, rank = this.#rank, heap = this.#heap;
    const { pair, mergeResult } = t;
    let size = 0;
    // 4-ary: half the depth of a binary heap, and the four children share a cache line
    const sift = (k: number, x: number) => {
      for (;;) {
        const c = 4 * k + 1;
        if (c >= size) break;
        let best = c, v = heap[c];
        const end = Math.min(c + 4, size);
        for (let d = c + 1; d < end; d++) if (heap[d] < v) v = heap[(best = d)];
        if (v >= x) break;
        heap[k] = v;
        k = best;
      }
      heap[k] = x;
    };
    const push = (key: number) => {
      let k = size++;
      while (k > 0 && heap[(k - 1) >> 2] > key) {
        heap[k] = heap[(k - 1) >> 2];
        k = (k - 1) >> 2;
      }
      heap[k] = key;
    };
    for (let i = 0; i < n; i++) {
      tok[i] = first[i];
      next[i] = i + 1;
      prev[i] = i - 1;
    }
    for (let i = 0; i + 1 < n; i++) {
      const r = (rank[i] = pair(tok[i], tok[i + 1]));
      if (r >= 0) heap[size++] = r * MAX_RUN + i;
    }
    rank[n - 1] = -1;
    for (let k = (size - 2) >> 2; k >= 0; k--) sift(k, heap[k]);
    while (size > 0) {
      const key = heap[0];
      sift(0, heap[--size]);
      const r = (key / MAX_RUN) | 0;
      const i = key - r * MAX_RUN;
      if (rank[i] !== r) continue;
      const j = next[i], nj = next[j];
      tok[i] = mergeResult[r];
      rank[j] = -1;
      next[i] = nj;
      if (nj < n) {
        prev[nj] = i;
        const ri = (rank[i] = pair(tok[i], tok[nj]));
        if (ri >= 0) push(ri * MAX_RUN + i);
      } else rank[i] = -1;
      const p = prev[i];
      if (p >= 0) {
        const rp = (rank[p] = pair(tok[p], tok[i]));
        if (rp >= 0) push(rp * MAX_RUN + p);
      }
    }
    for (let i = 0; i < n; i = next[i]) {
      if (tok[i] >= 0) out.push(tok[i]);
      else if (t.unkId !== undefined) out.push(t.unkId);
    }
  }
}
