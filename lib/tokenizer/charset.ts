// Character sets of the regex engine: a predicate over code points, memoised per set and per
// Unicode property, so that a property costs one RegExp test per distinct character.

export type CodePointTest = (cp: number) => boolean;

export class CharSet {
  readonly #test: CodePointTest;
  // 256-code-point pages, made on first use: 0 unknown, 1 no, 2 yes
  readonly #pages: Array<Uint8Array | undefined> = new Array(0x1100);
  /** The one code point this set is, when it is a single literal (fast path). */
  readonly single: number;

  constructor(test: CodePointTest, single = -1) {
    this.#test = test;
    this.single = single;
  }

  has(cp: number): boolean {
    const page = (this.#pages[cp >> 8] ??= new Uint8Array(256));
    const v = page[cp & 255];
    if (v !== 0) return v === 2;
    const r = this.#test(cp);
    page[cp & 255] = r ? 2 : 1;
    return r;
  }
}

const propertyCache = new Map<string, CodePointTest | null>();

/**
 * `\p{name}` as JavaScript knows it, else as a script (Oniguruma's `\p{Han}` is JavaScript's
 * `\p{Script=Han}`, as tokenizers.js rewrites it); null when neither exists.
 */
export function property(name: string): CodePointTest | null {
  let t = propertyCache.get(name);
  if (t !== undefined) return t;
  t = null;
  for (const src of [`\\p{${name}}`, `\\p{Script=${name}}`]) {
    let re: RegExp;
    try {
      re = new RegExp(`^${src}$`, 'u');
    } catch {
      continue; // not this spelling
    }
    const memo = propertyTable(new RegExp(`${src}+`, 'gu'));
    t = (cp) => {
      const v = memo[cp];
      if (v !== 0) return v === 2;
      const r = re.test(String.fromCodePoint(cp));
      memo[cp] = r ? 2 : 1;
      return r;
    };
    break;
  }
  propertyCache.set(name, t);
  return t;
}

let planes01: string | undefined;

/**
 * A table of a property over all of Unicode (1.1 MB; 0 unknown, 1 no, 2 yes), shared by every
 * set and pattern. Planes 0 and 1 are filled at once, by one pass of the property's pattern over
 * a string of all their code points (a few ms); the rest, one RegExp test per code point seen.
 * Testing each character as it comes cost random text a RegExp call per distinct character.
 */
function propertyTable(run: RegExp): Uint8Array {
  if (planes01 === undefined) {
    const parts: string[] = [];
    for (let base = 0; base < 0x20000; base += 4096) {
      const cps: number[] = [];
      // Surrogates and NUL stand in as NUL, and are left to the per-code-point test.
      for (let cp = base; cp < base + 4096; cp++) cps.push(cp >= 0xd800 && cp <= 0xdfff ? 0 : cp);
      parts.push(String.fromCodePoint(...cps));
    }
    planes01 = parts.join('');
  }
  const memo = new Uint8Array(0x110000);
  memo.fill(1, 0, 0x20000);
  for (const m of planes01.matchAll(run)) {
    const start = m.index!;
    // every code point before 0x10000 is one UTF-16 unit, every one after two
    for (let u = start, end = start + m[0].length; u < end; ) {
      const cp = u < 0x10000 ? u : 0x10000 + ((u - 0x10000) >> 1);
      memo[cp] = 2;
      u += cp < 0x10000 ? 1 : 2;
    }
  }
  memo.fill(0, 0xd800, 0xe000);
  memo[0] = 0;
  return memo;
}

// Built on first use: GPT-2's tokenizer never needs them.
function req(name: string): CodePointTest {
  let t: CodePointTest | undefined;
  return (cp) => (t ??= property(name)!)(cp);
}

const whiteSpace = req('White_Space');
const nd = req('Nd');
const alphabetic = req('Alphabetic');
const mark = req('M');
const pc = req('Pc');
const isHex = (cp: number) => (cp >= 48 && cp <= 57) || (cp >= 65 && cp <= 70) || (cp >= 97 && cp <= 102);
// Oniguruma's \w in Unicode mode, as tokenizers.js spells it.
export const isWord: CodePointTest = (cp) => alphabetic(cp) || mark(cp) || nd(cp) || pc(cp);

/** Oniguruma's shorthand classes (\s is Unicode White_Space, \d is \p{Nd}), or null. */
export function shorthand(letter: string): CodePointTest | null {
  switch (letter) {
    case 's': return whiteSpace;
    case 'S': return (cp) => !whiteSpace(cp);
    case 'd': return nd;
    case 'D': return (cp) => !nd(cp);
    case 'w': return isWord;
    case 'W': return (cp) => !isWord(cp);
    case 'h': return isHex;
    case 'H': return (cp) => !isHex(cp);
    default: return null;
  }
}

const POSIX: Record<string, string[]> = {
  alpha: ['Alphabetic'], digit: ['Nd'], alnum: ['Alphabetic', 'Nd'], upper: ['Uppercase'],
  lower: ['Lowercase'], space: ['White_Space'], punct: ['P', 'S'], cntrl: ['Cc'],
};

/** `[:name:]` inside a bracket class, or null. */
export function posix(name: string): CodePointTest | null {
  if (name === 'xdigit') return isHex;
  if (name === 'word') return isWord;
  const props = POSIX[name]?.map((p) => property(p)!);
  return props ? (cp) => props.some((p) => p(cp)) : null;
}

// Simple case mappings, per code point, computed once each (pages made on first use).
const lowerPages: Array<Int32Array | undefined> = new Array(0x1100);
const upperPages: Array<Int32Array | undefined> = new Array(0x1100);

function mapped(pages: Array<Int32Array | undefined>, cp: number, upper: boolean): number {
  const page = (pages[cp >> 8] ??= new Int32Array(256).fill(-1));
  let v = page[cp & 255];
  if (v < 0) {
    const s = String.fromCodePoint(cp);
    const t = upper ? s.toUpperCase() : s.toLowerCase();
    const c = t.codePointAt(0)!;
    // a mapping to several characters (ß → SS) is not a simple one: the character itself
    v = page[cp & 255] = t.length === String.fromCodePoint(c).length ? c : cp;
  }
  return v;
}

/** Under (?i): the set also holds the simple lower- and upper-case forms of its members. */
export function caseless(t: CodePointTest): CodePointTest {
  return (cp) => t(cp) || t(mapped(lowerPages, cp, false)) || t(mapped(upperPages, cp, true));
}
