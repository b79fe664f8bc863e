// Parser for the Oniguruma patterns of tokenizer.json files (Split pre-tokenizers, Replace
// normalizers), for the linear-time engine in regex.ts. It takes what tokenizer patterns use
// (alternation, greedy and lazy quantifiers, classes with Unicode properties, (?i), anchors, \b,
// and lookaround of one character, as in `\s+(?!\S)`) and refuses the rest (backreferences,
// possessive and atomic groups, wider lookaround) rather than run them in an engine that can
// backtrack for ever.
import { caseless, type CodePointTest } from './charset.js';
import { type AssertKind, Cursor, parseBracket, parseEscape, PatternError } from './regex-class.js';

export { type AssertKind, PatternError };

export type Node =
  | { t: 'set'; set: CodePointTest; single: number }
  | { t: 'cat'; items: Node[] }
  | { t: 'alt'; items: Node[] }
  | { t: 'rep'; node: Node; min: number; max: number; greedy: boolean }
  | { t: 'assert'; kind: AssertKind }
  | { t: 'look'; behind: boolean; negate: boolean; set: CodePointTest };

const MAX_REPEAT = 1000;
const MAX_DEPTH = 200;

/** One code point's worth of pattern (a set, or an alternation of sets), as a test; else null. */
function single(n: Node): CodePointTest | null {
  if (n.t === 'set') return n.set;
  if ((n.t === 'cat' || n.t === 'alt') && n.items.length === 1) return single(n.items[0]);
  if (n.t === 'alt') {
    const ts = n.items.map(single);
    return ts.every((t) => t) ? (cp) => ts.some((t) => t!(cp)) : null;
  }
  return null;
}

export function parsePattern(source: string): Node {
  const c: Cursor = new Cursor(source);
  const src = source;
  let icase = false;
  let dotAll = false;
  let depth = 0;
  const set = (t: CodePointTest, cp = -1): Node => ({ t: 'set', set: icase ? caseless(t) : t, single: icase ? -1 : cp });
  const lit = (cp: number): Node => set((x) => x === cp, cp);

  const quantified = (atom: Node): Node => {
    for (;;) {
      let min: number, max: number;
      const q = src[c.i];
      if (q === '*') [min, max] = [0, Infinity];
      else if (q === '+') [min, max] = [1, Infinity];
      else if (q === '?') [min, max] = [0, 1];
      else if (q === '{') {
        const m = /^\{(\d*)(,?)(\d*)\}/.exec(src.slice(c.i, c.i + 24));
        if (!m || (m[1] === '' && m[3] === '')) return atom; // a literal '{', as in Oniguruma
        min = m[1] === '' ? 0 : +m[1];
        max = m[2] ? (m[3] === '' ? Infinity : +m[3]) : min;
        if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT) || max < min) c.fail('bad or too large repeat count');
        c.i += m[0].length - 1;
      } else return atom;
      c.i++;
      let greedy = true;
      if (src[c.i] === '?') {
        greedy = false;
        c.i++;
      } else if (src[c.i] === '+' && q !== '{') c.fail('possessive quantifiers are not supported');
      if (atom.t === 'assert' || atom.t === 'look') c.fail('quantified assertion');
      atom = { t: 'rep', node: atom, min, max, greedy };
    }
  };

  const close = (n: Node) => {
    if (src[c.i++] !== ')') c.fail('missing )');
    return n;
  };

  // from the character after '('
  const group = (): Node => {
    if (++depth > MAX_DEPTH) c.fail('groups nested too deep');
    try {
      if (src[c.i] !== '?') return close(alternation());
      c.i++;
      const look = /^(<?)([=!])/.exec(src.slice(c.i, c.i + 2));
      if (look) {
        c.i += look[0].length;
        const t = single(close(alternation()));
        if (!t) c.fail('lookaround wider than one character is not supported');
        return { t: 'look', behind: look[1] === '<', negate: look[2] === '!', set: t };
      }
      const named = /^(?:<[A-Za-z_]\w*>|'[A-Za-z_]\w*')/.exec(src.slice(c.i, c.i + 64));
      if (src[c.i] === ':' || named) {
        c.i += named ? named[0].length : 1;
        return close(alternation());
      }
      const flags = /^([imx]*)(?:-([imx]*))?([:)])/.exec(src.slice(c.i, c.i + 16));
      if (!flags || /x/.test(flags[1] + (flags[2] ?? ''))) c.fail('unsupported group');
      const [on, off] = [flags[1], flags[2] ?? ''];
      const saved = [icase, dotAll];
      if (on.includes('i') || off.includes('i')) icase = on.includes('i');
      if (on.includes('m') || off.includes('m')) dotAll = on.includes('m'); // Ruby's m is dotall
      c.i += flags[0].length;
      if (flags[3] === ')') return { t: 'cat', items: [] }; // (?i) holds to the end of the group
      const n = close(alternation());
      [icase, dotAll] = saved;
      return n;
    } finally {
      depth--;
    }
  };

  const atom = (): Node | null => {
    const ch = src[c.i];
    if (ch === undefined || ch === '|' || ch === ')') return null;
    c.i++;
    switch (ch) {
      case '(': return group();
      case '[': return set(parseBracket(c));
      case '.': return set(dotAll ? () => true : (cp) => cp !== 10);
      case '^': return { t: 'assert', kind: 'bol' }; // line anchors, as in Ruby
      case '$': return { t: 'assert', kind: 'eol' };
      case '*': case '+': case '?': return c.fail('nothing to repeat');
      case '\\': {
        if (/^(?:[1-9]|k<|g<|[GKRXyY])/.test(src.slice(c.i, c.i + 2))) c.fail('backreferences and \\G \\K \\R \\X are not supported');
        const e = parseEscape(c, false);
        if (typeof e === 'number') return lit(e);
        return typeof e === 'string' ? { t: 'assert', kind: e } : set(e);
      }
    }
    c.i--;
    return lit(c.take());
  };

  function alternation(): Node {
    const saved = [icase, dotAll];
    const alts: Node[] = [];
    for (;;) {
      const items: Node[] = [];
      for (let a = atom(); a; a = atom()) items.push(quantified(a));
      alts.push({ t: 'cat', items });
      if (src[c.i] !== '|') break;
      c.i++;
    }
    [icase, dotAll] = saved;
    return alts.length === 1 ? alts[0] : { t: 'alt', items: alts };
  }

  const root = alternation();
  if (c.i < src.length) c.fail('unbalanced )');
  return root;
}
