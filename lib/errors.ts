// Errors raised in TypeScript carry a `code`, like those from the native side.
export type ErrorKind = 'Error' | 'TypeError' | 'RangeError';

export function codedError(kind: ErrorKind, code: string, message: string): Error & { code: string } {
  const Ctor = kind === 'TypeError' ? TypeError : kind === 'RangeError' ? RangeError : Error;
  return Object.assign(new Ctor(message), { code });
}
