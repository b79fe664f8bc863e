// GPT-2's pre-tokenizer pattern, hand-compiled:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// A backtracking engine takes quadratic time on some inputs here and V8's overflows its stack on
// megabytes of whitespace; RE2-style engines lack the lookahead. Each alternative is a run of one
// class, so one left-to-right pass with one character of lookahead gives the same matches.
import { classOf, classTable, codePointAt, JS_SPACE, LETTER, NUMBER, WHITE_SPACE } from './unicode.js';

/** Calls `emit(start, end)` for each match of a pattern in s[from, to), left to right. */
export type Matcher = (s: string, from: number, to: number, emit: (start: number, end: number) => void) => void;

export const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

const SPACE = 0, L = 1, N = 2, OTHER = 3;

/**
 * The GPT-2 pattern with `\s` as JavaScript reads it (tiktoken and the ByteLevel pre-tokenizer,
 * which run it as a JS RegExp) or as Unicode White_Space (a Split pre-tokenizer's Oniguruma
 * pattern): they differ on U+FEFF and U+0085 only.
 */
export function gpt2Matcher(space: 'js' | 'unicode'): Matcher {
  const spaceBit = space === 'js' ? JS_SPACE : WHITE_SPACE;
  const table = classTable();
  const kind = (cp: number): number => {
    const bits = cp < 0x10000 ? table[cp] & 0x7f : classOf(cp);
    return bits & spaceBit ? SPACE : bits & LETTER ? L : bits & NUMBER ? N : OTHER;
  };
  const run = (s: string, j: number, to: number, k: number): number => {
    while (j < to) {
      const cp = codePointAt(s, j, to);
      if (kind(cp) !== k) break;
      j += cp > 0xffff ? 2 : 1;
    }
    return j;
  };
  return (s, from, to, emit) => {
    let i = from;
    while (i < to) {
      const c = s.charCodeAt(i);
      if (c === 39 && i + 1 < to) {
        const d = s.charCodeAt(i + 1);
        const e = i + 2 < to ? s.charCodeAt(i + 2) : -1;
        // 's 't 'm 'd, then 're 've 'll
        const len = d === 115 || d === 116 || d === 109 || d === 100 ? 2
          : ((d === 114 || d === 118) && e === 101) || (d === 108 && e === 108) ? 3 : 0;
        if (len) {
          emit(i, i + len);
          i += len;
          continue;
        }
      }
      const cp = codePointAt(s, i, to);
      const k = kind(cp);
      let j: number;
      if (k !== SPACE) {
        j = run(s, i, to, k);
      } else if (c === 32 && i + 1 < to && kind(codePointAt(s, i + 1, to)) !== SPACE) {
        // " ?X+": the optional space joins the run of letters, digits or others after it
        j = run(s, i + 1, to, kind(codePointAt(s, i + 1, to)));
      } else {
        // Whitespace is all in the BMP. \s+(?!\S) gives back the last space of a run that a
        // non-space follows (it then leads that word), unless the run is one character (\s+).
        j = i + 1;
        while (j < to && kind(s.charCodeAt(j)) === SPACE) j++;
        if (j < to && j - 1 > i) j--;
      }
      emit(i, j);
      i = j;
    }
  };
}
