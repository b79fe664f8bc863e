// A linear-time regex engine for tokenizer.json patterns (a Pike VM: all threads advance one
// character at a time, each program position at most once per character). V8's backtracking
// engine can take exponential time on a pattern like `(a+)+$`, and a tokenizer.json may come
// from anywhere; RE2 (re2-wasm) is linear but lacks the one-character lookahead `\s+(?!\S)` that
// nearly every byte-level pattern has. Matches are leftmost-first, as a backtracking engine
// finds them. Finding all matches can still rescan text (quadratic for some patterns in any
// engine, RE2 and Rust's regex included), so the work per call is also bounded: past
// WORK_PER_UNIT steps per character and program instruction (real patterns take well under one)
// it fails with ERR_TDPO_TOKENIZER.
import { codedError } from '../errors.js';
import { CharSet, isWord } from './charset.js';
import type { Matcher } from './gpt2-split.js';
import { type AssertKind, type Node, parsePattern, PatternError } from './regex-parse.js';
import { codePointAt } from './unicode.js';

const CHAR = 0, SPLIT = 1, JMP = 2, ASSERT = 3, LOOK = 4, MATCH = 5;
const ASSERTS: AssertKind[] = ['bol', 'eol', 'bos', 'eos', 'eosnl', 'word', 'notword'];
const MAX_PROGRAM = 20000;
const MAX_SOURCE = 1 << 16;
const WORK_PER_UNIT = 4;
const FREE_STEPS = 1 << 22; // a few tens of ms: short texts never fail, whatever the pattern
const wordSet = new CharSet(isWord);

interface Program {
  op: Int32Array;
  a: Int32Array;
  b: Int32Array;
  sets: CharSet[];
}

function compile(root: Node): Program {
  const op: number[] = [], a: number[] = [], b: number[] = [], sets: CharSet[] = [];
  const setIndex = new Map<Node, number>();
  const put = (o: number, x = -1, y = -1) => {
    if (op.length >= MAX_PROGRAM) throw new PatternError('the pattern is too large');
    op.push(o), a.push(x), b.push(y);
    return op.length - 1;
  };
  const emit = (n: Node): void => {
    switch (n.t) {
      case 'set': {
        let k = setIndex.get(n);
        if (k === undefined) setIndex.set(n, (k = sets.push(new CharSet(n.set, n.single)) - 1));
        put(CHAR, k);
        return;
      }
      case 'cat':
        return n.items.forEach(emit);
      case 'alt': {
        const jumps: number[] = [];
        n.items.forEach((item, k) => {
          const last = k === n.items.length - 1;
          const split = last ? -1 : put(SPLIT, op.length + 1);
          emit(item);
          if (!last) {
            jumps.push(put(JMP));
            b[split] = op.length;
          }
        });
        for (const j of jumps) a[j] = op.length;
        return;
      }
      case 'rep': {
        for (let k = 0; k < n.min; k++) emit(n.node);
        const order = (split: number, body: number, exit: number) => {
          a[split] = n.greedy ? body : exit;
          b[split] = n.greedy ? exit : body;
        };
        if (n.max === Infinity) {
          const split = put(SPLIT);
          emit(n.node);
          put(JMP, split);
          order(split, split + 1, op.length);
        } else {
          const splits: number[] = [];
          for (let k = n.min; k < n.max; k++) {
            splits.push(put(SPLIT));
            emit(n.node);
          }
          for (const s of splits) order(s, s + 1, op.length);
        }
        return;
      }
      case 'assert':
        put(ASSERT, ASSERTS.indexOf(n.kind));
        return;
      case 'look':
        put(LOOK, (n.behind ? 2 : 0) | (n.negate ? 1 : 0), sets.push(new CharSet(n.set)) - 1);
        return;
    }
  };
  emit(root);
  put(MATCH);
  return { op: Int32Array.from(op), a: Int32Array.from(a), b: Int32Array.from(b), sets };
}

/** Compiles an Oniguruma pattern from a tokenizer.json; unsupported syntax: ERR_TDPO_TOKENIZER. */
export function compilePattern(source: string): Matcher {
  let prog: Program;
  try {
    if (source.length > MAX_SOURCE) throw new PatternError(`it is longer than ${MAX_SOURCE} characters`);
    prog = compile(parsePattern(source));
  } catch (err) {
    if (!(err instanceof PatternError)) throw err;
    throw codedError('RangeError', 'ERR_TDPO_TOKENIZER', `pattern ${JSON.stringify(source)} is not supported: ${err.message}`);
  }
  return pikeMatcher(prog, source);
}

function pikeMatcher(prog: Program, source: string): Matcher {
  const { op, a, b, sets } = prog;
  const n = op.length;
  const mark = new Int32Array(n).fill(-1);
  const stack = new Int32Array(2 * n + 2);
  let cur = { pc: new Int32Array(n), st: new Int32Array(n), len: 0 };
  let nxt = { pc: new Int32Array(n), st: new Int32Array(n), len: 0 };
  let gen = 0;

  return (s, from, to, emit) => {
    const budget = WORK_PER_UNIT * n * (to - from) + FREE_STEPS;
    let steps = 0;
    const prevCp = (at: number) => (at <= from ? -1 : at - 2 >= from && (s.charCodeAt(at - 1) & 0xfc00) === 0xdc00 && (s.charCodeAt(at - 2) & 0xfc00) === 0xd800 ? codePointAt(s, at - 2, to) : s.charCodeAt(at - 1));
    const nextCp = (at: number) => (at >= to ? -1 : codePointAt(s, at, to));
    const holds = (kind: number, at: number): boolean => {
      switch (ASSERTS[kind]) {
        case 'bol': return at === from || s.charCodeAt(at - 1) === 10;
        case 'eol': return at === to || s.charCodeAt(at) === 10;
        case 'bos': return at === from;
        case 'eos': return at === to;
        case 'eosnl': return at === to || (at === to - 1 && s.charCodeAt(at) === 10);
        default: {
          const p = prevCp(at), q = nextCp(at);
          const differ = (p >= 0 && wordSet.has(p)) !== (q >= 0 && wordSet.has(q));
          return ASSERTS[kind] === 'word' ? differ : !differ;
        }
      }
    };
    // Adds the thread at pc and everything it reaches without consuming, in priority order.
    const add = (list: typeof cur, pc0: number, start: number, at: number) => {
      let sp = 0;
      stack[sp++] = pc0;
      while (sp > 0) {
        const pc = stack[--sp];
        if (mark[pc] === gen) continue;
        mark[pc] = gen;
        steps++;
        switch (op[pc]) {
          case JMP: stack[sp++] = a[pc]; break;
          case SPLIT: stack[sp++] = b[pc]; stack[sp++] = a[pc]; break;
          case ASSERT: if (holds(a[pc], at)) stack[sp++] = pc + 1; break;
          case LOOK: {
            const cp = a[pc] & 2 ? prevCp(at) : nextCp(at);
            if ((cp >= 0 && sets[b[pc]].has(cp)) !== ((a[pc] & 1) === 1)) stack[sp++] = pc + 1;
            break;
          }
          default:
            list.pc[list.len] = pc;
            list.st[list.len++] = start;
        }
      }
    };
    // The leftmost-first match starting at or after pos, as [start, end], or null.
    const search = (pos: number): [number, number] | null => {
      let found: [number, number] | null = null;
      gen++;
      cur.len = 0;
      add(cur, 0, pos, pos);
      for (let i = pos; cur.len > 0; ) {
        if (steps > budget) {
          throw codedError('RangeError', 'ERR_TDPO_TOKENIZER',
            `pattern ${JSON.stringify(source)} needs more than linear work on this input (${to - from} characters); refusing rather than stalling`);
        }
        const cp = i < to ? codePointAt(s, i, to) : -1;
        const ni = i + (cp > 0xffff ? 2 : 1);
        gen++;
        nxt.len = 0;
        for (let k = 0; k < cur.len; k++) {
          const pc = cur.pc[k];
          steps++;
          if (op[pc] === MATCH) {
            found = [cur.st[k], i];
            break; // lower-priority threads lose to this match
          }
          if (cp >= 0) {
            const set = sets[a[pc]];
            if (set.single === cp || (set.single < 0 && set.has(cp))) add(nxt, pc + 1, cur.st[k], ni);
          }
        }
        if (i >= to) break;
        if (!found) add(nxt, 0, ni, ni);
        [cur, nxt] = [nxt, cur];
        i = ni;
      }
      return found;
    };
    for (let pos = from; pos <= to; ) {
      const m = search(pos);
      if (!m) break;
      if (m[1] > m[0]) {
        emit(m[0], m[1]);
        pos = m[1];
      } else pos = m[1] + (m[1] < to && codePointAt(s, m[1], to) > 0xffff ? 2 : 1);
    }
  };
}
