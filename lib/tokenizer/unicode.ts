// Code-point classes for the hand-written GPT-2 pre-tokenizer: a RegExp test per character would
// dominate its time; a table makes each a load and a mask.

export const LETTER = 1; // \p{L}
export const NUMBER = 2; // \p{N}
export const JS_SPACE = 4; // JavaScript's \s, which tiktoken and the ByteLevel pre-tokenizer use
export const WHITE_SPACE = 8; // \p{White_Space}, which Oniguruma's \s is (Split patterns)
const KNOWN = 0x80;

const tests: Array<[RegExp, number]> = [
  [/^\p{L}$/u, LETTER],
  [/^\p{N}$/u, NUMBER],
  [/^\s$/u, JS_SPACE],
  [/^\p{White_Space}$/u, WHITE_SPACE],
];

let table: Uint8Array | undefined;

// The BMP is classified up front (a few ms: one pass of each pattern over all of it); the
// astral planes, which ordinary text rarely reaches, one code point at a time on first sight.
function build(): Uint8Array {
  const t = new Uint8Array(0x110000);
  const units: number[] = [];
  // Surrogates stand in as NUL (class: other) so that string index = code unit.
  for (let c = 0; c < 0x10000; c++) units.push(c >= 0xd800 && c <= 0xdfff ? 0 : c);
  let bmp = '';
  for (let i = 0; i < units.length; i += 8192) bmp += String.fromCharCode(...units.slice(i, i + 8192));
  for (const [re, bit] of tests) {
    const g = new RegExp(re.source.slice(1, -1) + '+', 'gu');
    for (const m of bmp.matchAll(g)) for (let i = m.index!, e = i + m[0].length; i < e; i++) t[i] |= bit;
  }
  for (let c = 0; c < 0x10000; c++) t[c] |= KNOWN;
  return t;
}

/** The class bits of code point `cp` (LETTER | NUMBER | JS_SPACE | WHITE_SPACE; 0 = other). */
export function classOf(cp: number): number {
  const t = (table ??= build());
  const v = t[cp];
  if (v !== 0) return v & ~KNOWN;
  const s = String.fromCodePoint(cp);
  let bits = 0;
  for (const [re, bit] of tests) if (re.test(s)) bits |= bit;
  t[cp] = bits | KNOWN;
  return bits;
}

/** The class table itself, for scanners that index it directly (`classOf` fills astral entries). */
export function classTable(): Uint8Array {
  return (table ??= build());
}

/** Code point at `i` of `s` and its width in UTF-16 units (lone surrogates stand for themselves). */
export function codePointAt(s: string, i: number, end: number): number {
  const c = s.charCodeAt(i);
  if (c >= 0xd800 && c <= 0xdbff && i + 1 < end) {
    const d = s.charCodeAt(i + 1);
    if (d >= 0xdc00 && d <= 0xdfff) return ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
  }
  return c;
}
