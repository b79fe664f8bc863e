// (left id, right id) → merge rank, open addressing in one Int32Array of [left, right, rank, -]
// slots (a probe touches one cache line): a Map keyed by `${a} ${b}` strings (what
// tokenizers.js does) allocates a string per lookup, and numeric keys a * V + b leave the
// small-integer range for large vocabularies.
function pairHash(a: number, b: number): number {
  const h = Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca77);
  return h ^ (h >>> 15);
}

export class PairTable {
  #t: Int32Array;
  #mask: number; // slots - 1
  #count = 0;

  constructor(expected: number) {
    let slots = 16;
    while (slots < expected * 2) slots *= 2;
    this.#t = new Int32Array(slots * 4).fill(-1);
    this.#mask = slots - 1;
  }

  #slot(a: number, b: number): number {
    const t = this.#t;
    let i = pairHash(a, b) & this.#mask;
    while (t[4 * i] !== -1 && (t[4 * i] !== a || t[4 * i + 1] !== b)) i = (i + 1) & this.#mask;
    return 4 * i;
  }

  /** Later entries replace earlier ones, as in tokenizers (Rust and JS). */
  set(a: number, b: number, rank: number): void {
    if ((this.#count + 1) * 2 > this.#mask + 1) this.#rehash();
    const k = this.#slot(a, b);
    if (this.#t[k] === -1) this.#count++;
    this.#t[k] = a;
    this.#t[k + 1] = b;
    this.#t[k + 2] = rank;
  }

  /** The rank of the pair, or -1. */
  get(a: number, b: number): number {
    if (a < 0 || b < 0) return -1;
    const k = this.#slot(a, b);
    return this.#t[k] === -1 ? -1 : this.#t[k + 2];
  }

  /** `get` over the table as it is now, for hot loops (no private-field reads per call). */
  getter(): (a: number, b: number) => number {
    const t = this.#t, mask = this.#mask;
    return (a, b) => {
      if (a < 0 || b < 0) return -1;
      for (let i = pairHash(a, b) & mask; ; i = (i + 1) & mask) {
        const x = t[4 * i];
        if (x === -1) return -1;
        if (x === a && t[4 * i + 1] === b) return t[4 * i + 2];
      }
    };
  }

  #rehash(): void {
    const old = this.#t;
    this.#t = new Int32Array(old.length * 2).fill(-1);
    this.#mask = this.#t.length / 4 - 1;
    this.#count = 0;
    for (let k = 0; k < old.length; k += 4) if (old[k] !== -1) this.set(old[k], old[k + 1], old[k + 2]);
  }
}
