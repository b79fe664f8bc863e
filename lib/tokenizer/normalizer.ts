// A tokenizer.json's normalizer: tokenizers.js's own for each step (NFC, Lowercase, Prepend,
// Strip...: linear), except a Replace with a regex, which runs in the linear-time engine instead
// of a backtracking JavaScript RegExp.
import * as hfModule from '@huggingface/tokenizers';
import { codedError } from '../errors.js';
import { compilePattern } from './regex.js';

export type Normalize = (s: string) => string;
type Config = Record<string, unknown>;
// Exported by tokenizers.js, though its index.d.ts does not resolve them under "nodenext".
interface HfNormalizers {
  SequenceNormalizer: new (config: unknown) => { normalize(s: string): string };
}

/** Every regex source in a tokenizer.json section (normalizer, decoder...), nested sequences included. */
export function regexPatterns(cfg: unknown): string[] {
  if (!cfg || typeof cfg !== 'object') return [];
  if (Array.isArray(cfg)) return cfg.flatMap(regexPatterns);
  const out: string[] = [];
  for (const [k, v] of Object.entries(cfg)) {
    if (k === 'Regex' && typeof v === 'string') out.push(v);
    else out.push(...regexPatterns(v));
  }
  return out;
}

export function buildNormalizer(cfg: unknown): Normalize | null {
  if (cfg === null || cfg === undefined) return null;
  const c = cfg as Config;
  if (c.type === 'Sequence') {
    const parts = ((c.normalizers ?? []) as unknown[]).map(buildNormalizer).filter((p): p is Normalize => p !== null);
    return (s) => parts.reduce((t, p) => p(t), s);
  }
  const pattern = c.pattern as { Regex?: unknown } | undefined;
  if (c.type === 'Replace' && typeof pattern?.Regex === 'string') {
    const matcher = compilePattern(pattern.Regex);
    const content = String(c.content ?? '');
    return (s) => {
      let out = '', last = 0;
      matcher(s, 0, s.length, (a, b) => {
        out += s.slice(last, a) + content;
        last = b;
      });
      return out + s.slice(last);
    };
  }
  let hf: { normalize(s: string): string };
  try {
    hf = new (hfModule as unknown as HfNormalizers).SequenceNormalizer({ type: 'Sequence', normalizers: [cfg] });
  } catch (err) {
    throw codedError('RangeError', 'ERR_TDPO_TOKENIZER', `normalizer ${JSON.stringify(c.type)}: ${(err as Error).message}`);
  }
  return (s) => hf.normalize(s);
}
