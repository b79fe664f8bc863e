// Escapes and bracket classes of Oniguruma patterns, for regex-parse.ts.
import { type CodePointTest, posix, property, shorthand } from './charset.js';

export type AssertKind = 'bol' | 'eol' | 'bos' | 'eos' | 'eosnl' | 'word' | 'notword';

export class PatternError extends Error {}

/** A position in the pattern source. */
export class Cursor {
  i = 0;
  constructor(readonly src: string) {}

  fail(why: string): never {
    throw new PatternError(`${why} at index ${this.i}`);
  }

  /** The code point here, consumed. */
  take(): number {
    const c = this.src.codePointAt(this.i);
    if (c === undefined) this.fail('unexpected end');
    this.i += c > 0xffff ? 2 : 1;
    return c;
  }

  /** The text up to the next `close`, consumed with it. */
  upTo(close: string, what: string): string {
    const end = this.src.indexOf(close, this.i);
    if (end < 0) this.fail(`unterminated ${what}`);
    const s = this.src.slice(this.i, end);
    this.i = end + close.length;
    return s;
  }
}

const SIMPLE: Record<string, number> = { t: 9, n: 10, r: 13, f: 12, v: 11, a: 7, e: 27, '0': 0 };

function hex(c: Cursor, digits: string): number {
  if (!/^[0-9A-Fa-f]{1,8}$/.test(digits) || parseInt(digits, 16) > 0x10ffff) c.fail('bad hex escape');
  return parseInt(digits, 16);
}

/** The escape after a backslash: a code point, a set, or (outside classes) an assertion. */
export function parseEscape(c: Cursor, inClass: boolean): number | CodePointTest | AssertKind {
  const ch = String.fromCodePoint(c.take());
  if (ch in SIMPLE) return SIMPLE[ch];
  if (ch === 'b') return inClass ? 8 : 'word';
  if (!inClass) {
    const assertion = ({ B: 'notword', A: 'bos', z: 'eos', Z: 'eosnl' } as const)[ch as 'B'];
    if (assertion) return assertion;
  }
  const sh = shorthand(ch);
  if (sh) return sh;
  if (ch === 'x') {
    if (c.src[c.i] === '{') {
      c.i++;
      return hex(c, c.upTo('}', '\\x{}'));
    }
    const m = /^[0-9A-Fa-f]{1,2}/.exec(c.src.slice(c.i, c.i + 2));
    if (!m) c.fail('bad \\x');
    c.i += m[0].length;
    return hex(c, m[0]);
  }
  if (ch === 'u') {
    const digits = c.src.slice(c.i, c.i + 4);
    if (!/^[0-9A-Fa-f]{4}$/.test(digits)) c.fail('bad \\u');
    c.i += 4;
    return hex(c, digits);
  }
  if (ch === 'p' || ch === 'P') {
    if (c.src[c.i++] !== '{') c.fail('bad property escape');
    let name = c.upTo('}', 'property escape');
    let negate = ch === 'P';
    if (name.startsWith('^')) [negate, name] = [!negate, name.slice(1)];
    const p = property(name);
    if (!p) c.fail(`unknown property ${name}`);
    return negate ? (cp: number) => !p(cp) : p;
  }
  if (/[A-Za-z1-9]/.test(ch)) c.fail(`unsupported escape \\${ch}`);
  return ch.codePointAt(0)!;
}

/** A bracket class, from the character after its '['. */
export function parseBracket(c: Cursor, depth = 0): CodePointTest {
  if (depth > 32) c.fail('classes nested too deep');
  const src = c.src;
  let negate = false;
  if (src[c.i] === '^') {
    negate = true;
    c.i++;
  }
  const parts: CodePointTest[] = [];
  const ranges: number[] = [];
  const member = () => (src[c.i] === '\\' ? (c.i++, parseEscape(c, true)) : c.take());
  for (let first = true; ; first = false) {
    if (c.i >= src.length) c.fail('unterminated class');
    if (src[c.i] === ']' && !first) {
      c.i++;
      break;
    }
    if (src.startsWith('&&', c.i)) c.fail('class intersection is not supported');
    if (src.startsWith('[:', c.i)) {
      const m = /^\[:(\^?)([a-z]+):\]/.exec(src.slice(c.i, c.i + 16));
      const p = m && posix(m[2]);
      if (!p) c.fail('unsupported POSIX class');
      c.i += m![0].length;
      parts.push(m![1] ? (cp) => !p(cp) : p);
      continue;
    }
    if (src[c.i] === '[') {
      c.i++;
      parts.push(parseBracket(c, depth + 1));
      continue;
    }
    const lo = member();
    if (typeof lo !== 'number') {
      parts.push(lo as CodePointTest);
      continue;
    }
    if (src[c.i] === '-' && c.i + 1 < src.length && src[c.i + 1] !== ']') {
      c.i++;
      const hi = member();
      if (typeof hi !== 'number' || hi < lo) c.fail('bad class range');
      ranges.push(lo, hi);
    } else ranges.push(lo, lo);
  }
  const inRanges = (cp: number) => {
    for (let k = 0; k < ranges.length; k += 2) if (cp >= ranges[k] && cp <= ranges[k + 1]) return true;
    return false;
  };
  return (cp) => (inRanges(cp) || parts.some((p) => p(cp))) !== negate;
}
