// A Hugging Face tokenizer.json. Byte-level BPE files (GPT-2, GPT-NeoX/Pythia, Llama 3, Qwen 2:
// the kind this library's models use) run on our pipeline, in time linear in the input whatever
// the file says. Other kinds (WordPiece, Unigram, SentencePiece-style BPE) still run on
// tokenizers.js, but only when they carry no regex patterns, which it would run in V8's
// backtracking engine.
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { codedError } from '../errors.js';
import { PairTable } from './pair-table.js';
import { buildNormalizer, regexPatterns } from './normalizer.js';
import { type AddedToken, BytePipeline } from './pipeline.js';
import { tokenText } from './chat.js';
import { byteLevelPreTokenizer } from './pretokenize.js';

type Json = Record<string, unknown>;

export interface Backend {
  encode(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
  has(id: number): boolean;
}

/** Ids past this are refused: tables are indexed by id, and no real vocabulary comes close. */
const MAX_ID = 1 << 24;
/** Longer added tokens are refused: no real one comes close (pipeline.ts bounds the work anyway). */
const MAX_ADDED_LENGTH = 1024;

const bad = (file: string, why: string) => codedError('RangeError', 'ERR_TDPO_TOKENIZER', `${file}: ${why}`);

// GPT-2's printable stand-ins for bytes, as tokenizer.json vocabularies spell them.
const BYTE_CHARS: string[] = (() => {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let extra = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCharCode(printable(b) ? b : 256 + extra++));
})();
const CHAR_BYTES: number[] = [];
BYTE_CHARS.forEach((c, b) => (CHAR_BYTES[c.charCodeAt(0)] = b));

function bytesOf(token: string): Uint8Array {
  const out = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const b = CHAR_BYTES[token.charCodeAt(i)];
    if (b === undefined) return Buffer.from(token, 'utf8'); // not byte stand-ins: its own UTF-8
    out[i] = b;
  }
  return out;
}

function checkId(file: string, id: unknown, what: () => string): number {
  if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= MAX_ID) throw bad(file, `${what()} has id ${JSON.stringify(id)}, not an integer in [0, ${MAX_ID})`);
  return id as number;
}

export interface LoadedFile {
  backend: Backend;
  eosTokenId: number | undefined;
  /** tokenizer_config.json's bos_token, when it names a token of this file. */
  bosTokenId: number | undefined;
  /**
   * The token transformers' tokenizer(text) puts first: the leading special token of the
   * post_processor's template (Llama 3's <|begin_of_text|>), else bos_token where
   * tokenizer_config.json has add_bos_token; undefined when it adds none.
   */
  prefixTokenId: number | undefined;
  vocabSize: number;
}

export function loadTokenizerJson(file: string, json: Json, config: Json): LoadedFile {
  const model = json.model as Json | undefined;
  if (!model || typeof model !== 'object') throw bad(file, 'no model');
  const vocab = (model.vocab ?? {}) as Record<string, unknown> | unknown[];
  if (typeof vocab !== 'object') throw bad(file, 'model.vocab is not an object or array');
  const addedRaw = (json.added_tokens ?? []) as Json[];
  if (!Array.isArray(addedRaw)) throw bad(file, 'added_tokens is not an array');
  let maxId = -1;
  const vocabIds = new Map<string, number>();
  if (Array.isArray(vocab)) maxId = vocab.length - 1; // Unigram: [piece, score] by id
  else {
    for (const token in vocab) {
      const id = checkId(file, vocab[token], () => `vocabulary token ${JSON.stringify(token)}`);
      vocabIds.set(token, id);
      if (id > maxId) maxId = id;
    }
  }
  const added: AddedToken[] = addedRaw.map((t) => {
    if (typeof t?.content !== 'string' || t.content === '' || t.content.length > MAX_ADDED_LENGTH) {
      throw bad(file, `added token ${JSON.stringify(t?.content)?.slice(0, 80)} is not a string of 1 to ${MAX_ADDED_LENGTH} characters`);
    }
    const id = checkId(file, t.id, () => `added token ${JSON.stringify(t.content)}`);
    if (id > maxId) maxId = id;
    // tokenizers: special tokens are not normalized unless they say so
    const normalized = typeof t.normalized === 'boolean' ? t.normalized : t.special !== true;
    return { id, content: t.content, lstrip: t.lstrip === true, rstrip: t.rstrip === true, normalized };
  });
  // tokenizer_config.json's eos_token first (Qwen2.5-Instruct's is <|im_end|>, though its file
  // also has <|endoftext|>), as transformers takes it; else GPT-2's <|endoftext|>.
  const idOf = (name: string | undefined) => (name === undefined ? undefined : (added.find((t) => t.content === name)?.id ?? vocabIds.get(name)));
  const eosId = idOf(tokenText(config.eos_token)) ?? idOf('<|endoftext|>');
  const bosId = idOf(tokenText(config.bos_token));
  const prefixId = templatePrefix(json.post_processor) ?? (config.add_bos_token === true ? bosId : undefined);
  const vocabSize = maxId + 1;

  const pre = isByteLevelBpe(json, config) ? byteLevelPreTokenizer(json.pre_tokenizer) : undefined;
  if (pre) {
    const pipeline = new BytePipeline({
      ...bpeTables(file, model, vocabIds, maxId),
      added,
      normalizer: buildNormalizer(json.normalizer),
      preTokenizer: pre,
      removeSpace: config.remove_space === true,
    });
    return { backend: pipeline, eosTokenId: eosId, bosTokenId: bosId, prefixTokenId: prefixId, vocabSize };
  }
  return { backend: hfBackend(file, json, config), eosTokenId: eosId, bosTokenId: bosId, prefixTokenId: prefixId, vocabSize };
}

/** The id of a TemplateProcessing post-processor's leading special token (also inside a Sequence). */
function templatePrefix(p: unknown): number | undefined {
  const proc = p as Json | null | undefined;
  if (!proc || typeof proc !== 'object') return undefined;
  if (proc.type === 'Sequence' && Array.isArray(proc.processors)) {
    for (const q of proc.processors) {
      const id = templatePrefix(q);
      if (id !== undefined) return id;
    }
    return undefined;
  }
  if (proc.type !== 'TemplateProcessing' || !Array.isArray(proc.single)) return undefined;
  const first = (proc.single[0] as Json | undefined)?.SpecialToken as Json | undefined;
  if (typeof first?.id !== 'string') return undefined;
  const ids = ((proc.special_tokens as Json | undefined)?.[first.id] as Json | undefined)?.ids;
  return Array.isArray(ids) && ids.length === 1 && Number.isInteger(ids[0]) ? (ids[0] as number) : undefined;
}

function isByteLevelBpe(json: Json, config: Json): boolean {
  const m = json.model as Json;
  const plain = (v: unknown) => v === undefined || v === null || v === '' || v === 0;
  return (m.type === 'BPE' || (m.type === undefined && Array.isArray(m.merges))) && !Array.isArray(m.vocab)
    && (json.decoder as Json | null)?.type === 'ByteLevel'
    && m.byte_fallback !== true && plain(m.continuing_subword_prefix) && plain(m.end_of_word_suffix) && plain(m.dropout)
    && config.do_lowercase_and_remove_accent !== true;
}

function bpeTables(file: string, model: Json, vocabIds: Map<string, number>, maxId: number) {
  const merges = (model.merges ?? []) as unknown[];
  if (!Array.isArray(merges)) throw bad(file, 'model.merges is not an array');
  const pairs = new PairTable(merges.length);
  const mergeResult = new Int32Array(merges.length);
  for (let rank = 0; rank < merges.length; rank++) {
    const m = merges[rank];
    let left: unknown, right: unknown;
    if (typeof m === 'string') {
      const space = m.indexOf(' ');
      if (space >= 0 && m.indexOf(' ', space + 1) < 0) [left, right] = [m.slice(0, space), m.slice(space + 1)];
    } else if (Array.isArray(m) && m.length === 2) [left, right] = m;
    if (typeof left !== 'string' || typeof right !== 'string') throw bad(file, `merge ${rank} ${JSON.stringify(m)?.slice(0, 80)} is not two tokens`);
    const a = vocabIds.get(left), b = vocabIds.get(right), ab = vocabIds.get(left + right);
    // tokenizers (Rust) refuses such files too
    if (a === undefined || b === undefined || ab === undefined) throw bad(file, `merge ${rank} ${JSON.stringify(m)} uses or makes a token outside the vocabulary`);
    pairs.set(a, b, rank);
    mergeResult[rank] = ab;
  }
  const tokenBytes = new Array<Uint8Array | undefined>(maxId + 1);
  let maxTokenBytes = 0;
  const wholeTokens = model.ignore_merges === true ? new Map<string, number>() : undefined;
  for (const [token, id] of vocabIds) {
    const b = (tokenBytes[id] = bytesOf(token));
    maxTokenBytes = Math.max(maxTokenBytes, b.length);
    wholeTokens?.set(Buffer.from(b).toString('latin1'), id);
  }
  const byteIds = new Int32Array(256).map((_, b) => vocabIds.get(BYTE_CHARS[b]) ?? -1);
  const unk = typeof model.unk_token === 'string' ? vocabIds.get(model.unk_token) : undefined;
  return { model: { byteIds, pairs, mergeResult, wholeTokens, maxTokenBytes, unkId: unk }, tokenBytes };
}

function hfBackend(file: string, json: Json, config: Json): Backend {
  const patterns = regexPatterns([json.normalizer, json.pre_tokenizer, json.decoder, json.post_processor]);
  if (patterns.length) {
    throw bad(file, `regex pattern ${JSON.stringify(patterns[0])} in a tokenizer that is not byte-level BPE: ` +
      'only byte-level BPE tokenizers run patterns, in a linear-time engine');
  }
  let hf: HfTokenizer;
  try {
    hf = new HfTokenizer(json, config);
  } catch (err) {
    throw bad(file, `not a tokenizer this library can run: ${(err as Error).message}`);
  }
  return {
    encode: (text) => Int32Array.from(hf.encode(text, { add_special_tokens: false }).ids),
    decode: (ids) => hf.decode(Array.from(ids), { skip_special_tokens: false, clean_up_tokenization_spaces: false }),
    has: (id) => hf.id_to_token(id) !== undefined,
  };
}
