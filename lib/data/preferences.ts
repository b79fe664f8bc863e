// Preference data sets: JSONL read as a stream (the HH training file is ~170 MB), one pair per
// line in one of four formats, with every malformed line reported by file and line number (or
// counted and skipped with skip_invalid). Nothing is dropped silently.
import { createReadStream } from 'node:fs';
import { codedError } from '../errors.js';

export type DataFormat = 'pairs' | 'hh' | 'tokenized' | 'conversation';

/** A chat message, as TRL's conversational format and chat templates take them. */
export interface Message {
  role: string;
  content: string;
}

export type TextPair = { prompt: string; chosen: string; rejected: string };
export type IdsPair = { promptIds: number[]; chosenIds: number[]; rejectedIds: number[] };
export type MessagesPair = { promptMessages: Message[]; chosenMessages: Message[]; rejectedMessages: Message[] };

/** A pair as text, as token ids for the pre-tokenised format, or as messages (conversation). */
export type RawPair = TextPair | IdsPair | MessagesPair;

export interface ReadResult {
  pairs: RawPair[];
  /** The 1-based line number of each pair in `pairs`, for messages about it later. */
  lines: number[];
  /** Lines skipped as invalid (skip_invalid), with the reason of each. */
  skipped: Array<{ line: number; reason: string }>;
}

const HH_SPLIT = '\n\nAssistant:';

/** The Anthropic HH split: the prompt is everything up to and including the last "\n\nAssistant:". */
export function splitHh(chosen: string, rejected: string): { prompt: string; chosen: string; rejected: string } {
  const i = chosen.lastIndexOf(HH_SPLIT);
  if (i < 0) throw new Error(`"chosen" has no "\\n\\nAssistant:" turn`);
  const prompt = chosen.slice(0, i + HH_SPLIT.length);
  if (!rejected.startsWith(prompt)) throw new Error(`"rejected" does not share the prompt of "chosen" (up to its last "\\n\\nAssistant:")`);
  return { prompt, chosen: chosen.slice(prompt.length), rejected: rejected.slice(prompt.length) };
}

/**
 * With `sft`, a line's rejected response may be left out (SFT trains on prompt + chosen only); the
 * pair then carries the chosen response in its place, so that every later stage sees whole pairs.
 */
function parseLine(obj: unknown, format: DataFormat, sft: boolean): RawPair {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new Error('not a JSON object');
  const o = obj as Record<string, unknown>;
  const text = (k: string) => {
    if (typeof o[k] !== 'string') throw new Error(`field "${k}" is ${o[k] === undefined ? 'missing' : 'not a string'}`);
    return o[k] as string;
  };
  const ids = (k: string) => {
    const v = o[k];
    if (!Array.isArray(v) || !v.every((x) => Number.isSafeInteger(x) && x >= 0)) throw new Error(`field "${k}" must be an array of token ids`);
    return v as number[];
  };
  // TRL's conversational preference format with an explicit prompt: lists of {role, content}.
  const messages = (k: string) => {
    const v = o[k];
    if (!Array.isArray(v) || v.length === 0) throw new Error(`field "${k}" must be a non-empty array of messages`);
    v.forEach((m, i) => {
      const r = m as Record<string, unknown> | null;
      if (typeof r !== 'object' || r === null || typeof r.role !== 'string' || typeof r.content !== 'string') {
        throw new Error(`${k}[${i}] must be a message {"role": string, "content": string}`);
      }
    });
    return (v as Message[]).map((m) => ({ role: m.role, content: m.content }));
  };
  let pair: RawPair;
  const absent = (k: string) => sft && format !== 'hh' && o[k] === undefined;
  if (format === 'conversation') {
    const chosenMessages = messages('chosen');
    pair = { promptMessages: messages('prompt'), chosenMessages, rejectedMessages: absent('rejected') ? chosenMessages : messages('rejected') };
  } else if (format === 'tokenized') {
    const chosenIds = ids('chosen_ids');
    pair = { promptIds: ids('prompt_ids'), chosenIds, rejectedIds: absent('rejected_ids') ? chosenIds : ids('rejected_ids') };
    if (pair.chosenIds.length === 0 || pair.rejectedIds.length === 0) throw new Error('empty response');
  } else {
    pair = format === 'hh'
      ? splitHh(text('chosen'), text('rejected'))
      : { prompt: text('prompt'), chosen: text('chosen'), rejected: absent('rejected') ? text('chosen') : text('rejected') };
    if (pair.chosen.length === 0 || pair.rejected.length === 0) throw new Error('empty response');
  }
  return pair;
}

/**
 * The longest line read, in UTF-16 units: far above any preference pair, far below V8's longest
 * string (2^29 - 24), at which a line of /dev/zero ended the process with an uncaught RangeError
 * from readline, past any caller's catch.
 */
export const MAX_LINE_CHARS = 64 * 1024 * 1024;

/** The lines of a text stream as readline splits them (\r\n, \n or \r), each at most MAX_LINE_CHARS. */
async function* linesOf(chunks: AsyncIterable<string>, tooLong: (line: number) => Error): AsyncGenerator<string> {
  const BREAK = /\r\n|\r|\n/g;
  let pending = '';
  let skipLf = false; // a \r ended the last chunk: a \n opening this one belongs to it
  let n = 0;
  for await (const chunk of chunks) {
    let start = skipLf && chunk.startsWith('\n') ? 1 : 0;
    skipLf = false;
    BREAK.lastIndex = start;
    for (let m = BREAK.exec(chunk); m; m = BREAK.exec(chunk)) {
      const text = pending + chunk.slice(start, m.index);
      pending = '';
      if (text.length > MAX_LINE_CHARS) throw tooLong(n + 1);
      n++;
      start = m.index + m[0].length;
      if (m[0] === '\r' && start === chunk.length) skipLf = true;
      yield text;
    }
    pending += chunk.slice(start);
    if (pending.length > MAX_LINE_CHARS) throw tooLong(n + 1);
  }
  if (pending) yield pending;
}

export async function readPreferences(file: string, format: DataFormat, skipInvalid: boolean, sft = false): Promise<ReadResult> {
  const pairs: RawPair[] = [];
  const lines: number[] = [];
  const skipped: ReadResult['skipped'] = [];
  const stream = createReadStream(file, { encoding: 'utf8' });
  const opened = new Promise<void>((resolve, reject) => {
    stream.once('open', () => resolve());
    stream.once('error', (err) => reject(codedError('Error', 'ERR_TDPO_DATA', `cannot read ${file}: ${err.message}`)));
  });
  await opened;
  let line = 0;
  try {
    const tooLong = (n: number) => codedError('RangeError', 'ERR_TDPO_DATA', `${file}:${n}: a line longer than ${MAX_LINE_CHARS} characters (is it a JSONL file?)`);
    for await (const raw of linesOf(stream as AsyncIterable<string>, tooLong)) {
      line++;
      // A UTF-8 byte-order mark (some Windows editors write one) is no part of the first line's JSON.
      const text = line === 1 && raw.startsWith('\uFEFF') ? raw.slice(1) : raw;
      if (text.trim() === '') continue;
      try {
        let obj: unknown;
        try {
          obj = JSON.parse(text);
        } catch (err) {
          throw new Error(`bad JSON (${(err as Error).message})`);
        }
        pairs.push(parseLine(obj, format, sft));
        lines.push(line);
      } catch (err) {
        const reason = (err as Error).message;
        if (!skipInvalid) throw codedError('RangeError', 'ERR_TDPO_DATA', `${file}:${line}: ${reason} (set data.skip_invalid to count and skip such lines)`);
        skipped.push({ line, reason });
      }
    }
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_TDPO_DATA') throw err;
    // A read error after the open (a folder opens, then fails with EISDIR).
    throw codedError('Error', 'ERR_TDPO_DATA', `cannot read ${file}: ${(err as Error).message}`);
  } finally {
    // On an error the stream would otherwise read on (/dev/urandom: for good, after the error).
    stream.destroy();
  }
  return { pairs, lines, skipped };
}

/** Fisher-Yates with a seeded generator: the same seed, the same order. */
export function shuffled<T>(items: readonly T[], seed: number): T[] {
  let a = (seed ^ 0x9e3779b9) >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}
