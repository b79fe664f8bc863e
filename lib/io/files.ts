// Files a caller names (a config, a tokenizer, a model's JSON) are read whole, so only regular
// files are: /dev/zero as a config was read without end (11.5 GB in 30 s, a reviewer's find) and
// a FIFO would block.
import { readFileSync, statSync } from 'node:fs';
import { codedError } from '../errors.js';

/** Throws `code` unless `file` is a regular file; `what` names it in the message ("config"). */
export function checkRegularFile(file: string, code: string, what: string): void {
  let st;
  try {
    st = statSync(file);
  } catch (err) {
    throw codedError('Error', code, `cannot read ${what} ${file}: ${(err as Error).message}`);
  }
  if (!st.isFile()) throw codedError('Error', code, `${what} ${file} is not a regular file`);
}

/** A regular file's text, else `code`. */
export function readTextFile(file: string, code: string, what: string): string {
  checkRegularFile(file, code, what);
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw codedError('Error', code, `cannot read ${what} ${file}: ${(err as Error).message}`);
  }
}
