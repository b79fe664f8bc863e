// Pre-tokenizers of byte-level tokenizer.json files (GPT-2, GPT-NeoX, Llama 3, Qwen 2...), as
// stages that pass ranges of a string along instead of arrays of substrings, so that a 10 MB
// input does not become millions of intermediate strings before the BPE.
import * as hfModule from '@huggingface/tokenizers';
import { codedError } from '../errors.js';
import { GPT2_PATTERN, gpt2Matcher, type Matcher } from './gpt2-split.js';
import { compilePattern } from './regex.js';

export type Emit = (s: string, from: number, to: number) => void;
export type Stage = (s: string, from: number, to: number, emit: Emit) => void;
type Config = Record<string, unknown>;
// Exported by tokenizers.js, though its index.d.ts does not resolve them under "nodenext".
interface HfPreTokenizers {
  SequencePreTokenizer: new (config: unknown) => { pre_tokenize_text(s: string): string[] };
}

const bad = (why: string) => codedError('RangeError', 'ERR_TDPO_TOKENIZER', why);

function flatten(cfg: Config): Config[] {
  return cfg.type === 'Sequence' ? ((cfg.pretokenizers ?? []) as Config[]).flatMap(flatten) : [cfg];
}

/**
 * The pre-tokenizer of a byte-level file as one stage, or undefined when the file is not one this
 * pipeline runs (no ByteLevel, or one that is not last: later steps would see mapped bytes).
 */
export function byteLevelPreTokenizer(cfg: unknown): Stage | undefined {
  if (!cfg || typeof cfg !== 'object') return undefined;
  const steps = flatten(cfg as Config);
  const last = steps[steps.length - 1];
  if (last?.type !== 'ByteLevel' || steps.slice(0, -1).some((s) => s?.type === 'ByteLevel')) return undefined;
  const stages: Stage[] = [];
  for (const step of steps.slice(0, -1)) {
    const stage = stageOf(step);
    if (!stage) return undefined;
    stages.push(stage);
  }
  stages.push(byteLevel(last.add_prefix_space === true, last.use_regex !== false));
  return stages.reduceRight((next, stage): Stage => (s, from, to, emit) => stage(s, from, to, (t, a, b) => next(t, a, b, emit)));
}

function byteLevel(addPrefixSpace: boolean, useRegex: boolean): Stage {
  const gpt2 = gpt2Matcher('js');
  return (s, from, to, emit) => {
    if (addPrefixSpace && s.charCodeAt(from) !== 32) {
      s = ' ' + s.slice(from, to);
      [from, to] = [0, s.length];
    }
    if (useRegex) gpt2(s, from, to, (a, b) => emit(s, a, b));
    else emit(s, from, to);
  };
}

function stageOf(step: Config): Stage | undefined {
  switch (step?.type) {
    case 'Split': {
      const pattern = (step.pattern ?? {}) as { Regex?: unknown; String?: unknown };
      let matcher: Matcher;
      if (typeof pattern.Regex === 'string') {
        matcher = pattern.Regex === GPT2_PATTERN ? gpt2Matcher('unicode') : compilePattern(pattern.Regex);
      } else if (typeof pattern.String === 'string') matcher = literalMatcher(pattern.String);
      else throw bad(`Split pre-tokenizer without a pattern: ${JSON.stringify(step.pattern)}`);
      const behavior = String(step.behavior ?? 'Isolated');
      if (!['Isolated', 'Removed', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous'].includes(behavior)) {
        throw bad(`Split behavior ${JSON.stringify(behavior)} is unknown`);
      }
      return splitStage(matcher, behavior, step.invert === true);
    }
    case 'Digits':
      return splitStage(digitMatcher(step.individual_digits === true), 'Isolated', false);
    case 'Whitespace':
    case 'WhitespaceSplit':
    case 'Punctuation': {
      // tokenizers.js's own, with fixed linear patterns
      const hf = new (hfModule as unknown as HfPreTokenizers).SequencePreTokenizer({ type: 'Sequence', pretokenizers: [step] });
      return (s, from, to, emit) => {
        for (const piece of hf.pre_tokenize_text(s.slice(from, to))) emit(piece, 0, piece.length);
      };
    }
    default:
      return undefined;
  }
}

function literalMatcher(lit: string): Matcher {
  return (s, from, to, emit) => {
    if (lit === '') return;
    for (let i = s.indexOf(lit, from); i >= 0 && i + lit.length <= to; i = s.indexOf(lit, i + lit.length)) emit(i, i + lit.length);
  };
}

// tokenizers.js's Digits: [^\d]+|\d+ (or \d alone), \d being ASCII digits as in JavaScript.
function digitMatcher(individual: boolean): Matcher {
  const digit = (c: number) => c >= 48 && c <= 57;
  return (s, from, to, emit) => {
    for (let i = from; i < to; ) {
      let j = i + 1;
      if (!digit(s.charCodeAt(i))) while (j < to && !digit(s.charCodeAt(j))) j++;
      else if (!individual) while (j < to && digit(s.charCodeAt(j))) j++;
      emit(i, j);
      i = j;
    }
  };
}

/** Split with tokenizers' (Rust) behaviours; `invert` swaps what counts as the delimiter. */
function splitStage(matcher: Matcher, behavior: string, invert: boolean): Stage {
  return (s, from, to, emit) => {
    let pS = -1, pE = -1, pM = false; // a piece held back until the next one decides its fate
    const flush = () => {
      if (pS >= 0) emit(s, pS, pE);
      pS = -1;
    };
    const hold = (a: number, b: number, m: boolean) => ([pS, pE, pM] = [a, b, m]);
    const piece = (a: number, b: number, isMatch: boolean) => {
      const m = isMatch !== invert;
      switch (behavior) {
        case 'Isolated': return emit(s, a, b);
        case 'Removed': return m ? undefined : emit(s, a, b);
        case 'MergedWithPrevious': // a delimiter joins the piece before it, unless that is one too
          if (m && pS >= 0 && !pM) return hold(pS, b, true);
          flush();
          return hold(a, b, m);
        case 'MergedWithNext': // a delimiter joins the piece after it, unless that is one too
          if (!m && pS >= 0 && pM) return hold(pS, b, false), flush();
          flush();
          return hold(a, b, m);
        default: // Contiguous: consecutive delimiters become one piece
          if (pS >= 0 && pM === m) return hold(pS, b, m);
          flush();
          return hold(a, b, m);
      }
    };
    let last = from;
    matcher(s, from, to, (a, b) => {
      if (a > last) piece(last, a, false);
      piece(a, b, true);
      last = b;
    });
    if (last < to) piece(last, to, false);
    flush();
  };
}
