/** A growable Int32Array: ids of a 10 MB text would be 10 M boxed numbers in a plain array. */
export class IdSink {
  #buf = new Int32Array(256);
  length = 0;

  push(id: number): void {
    if (this.length === this.#buf.length) this.#reserve(1);
    this.#buf[this.length++] = id;
  }

  pushAll(ids: ArrayLike<number>): void {
    this.#reserve(ids.length);
    for (let i = 0; i < ids.length; i++) this.#buf[this.length++] = ids[i];
  }

  at(i: number): number {
    return this.#buf[i];
  }

  /** ids[from...] as a plain array (cheaper to allocate than a typed array, for the cache). */
  list(from: number): number[] {
    const out: number[] = [];
    for (let i = from; i < this.length; i++) out.push(this.#buf[i]);
    return out;
  }

  slice(from: number): Int32Array {
    return this.#buf.slice(from, this.length);
  }

  #reserve(k: number): void {
    if (this.length + k <= this.#buf.length) return;
    const b = new Int32Array(Math.max(this.#buf.length * 2, this.length + k));
    b.set(this.#buf.subarray(0, this.length));
    this.#buf = b;
  }
}
