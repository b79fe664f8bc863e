// Errors raised in TypeScript carry a `code`, like those from the native side.
export type ErrorKind = 'Error' | 'TypeError' | 'RangeError';

export function codedError(kind: ErrorKind, code: string, message: string): Error & { code: string } {
  const Ctor = kind === 'TypeError' ? TypeError : kind === 'RangeError' ? RangeError : Error;
  return Object.assign(new Ctor(message), { code });
}

/**
 * A value as messages show it: JSON, except that NaN and ±Infinity read as such (JSON.stringify
 * would print null), and long values are cut to `max` characters.
 */
/** An array or a typed array (not a DataView): what may hold token ids. A plain { length: 2 ** 40 } is not. */
export const isArrayOrTypedArray = (v: unknown): v is ArrayLike<number> => Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView));

export function showValue(v: unknown, max = 60): string {
  let s: string;
  if (typeof v === 'number') s = Object.is(v, -0) ? '-0' : String(v);
  else if (v === undefined) s = 'undefined';
  else {
    try {
      s = JSON.stringify(v, (_k, x: unknown) => (typeof x === 'number' && !Number.isFinite(x) ? String(x) : x)) ?? String(v);
    } catch {
      s = String(v);
    }
  }
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}
