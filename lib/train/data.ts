// The loop's data: the preference files read, the eval split held out, each pair tokenised and
// checked against the model before the first step: every token id inside the model's vocabulary
// (reported by file:line), max_length within the model's positions, the end-of-text id valid.
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { TrainConfig } from '../config.js';
import { readPreferences, shuffled, type IdsPair, type MessagesPair, type RawPair, type TextPair } from '../data/preferences.js';
import { collatePairs, tokenizePair, type TokenizedPair } from '../data/tokenize.js';
import { codedError } from '../errors.js';
import type { Model } from '../model.js';
import { toNativeConfig } from '../models/config.js';
import { Tokenizer } from '../tokenizer.js';

/** A pair and where it was read. */
export interface SourcedPair {
  pair: RawPair;
  file: string;
  line: number;
}

const configError = (msg: string) => codedError('RangeError', 'ERR_TDPO_CONFIG', msg);

export function loadTokenizer(c: TrainConfig): Tokenizer {
  const t = findTokenizer(c);
  if (c.data.format === 'conversation') {
    if (!t.hasChatTemplate) {
      throw configError("data.format 'conversation' needs a chat template: the tokenizer's tokenizer_config.json has no chat_template (nor is there a chat_template.jinja beside it)");
    }
    try {
      t.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }); // parse it before any data is read
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_TDPO_TOKENIZER') throw err; // a template refusing this probe is no fault
    }
  }
  return t;
}

function findTokenizer(c: TrainConfig): Tokenizer {
  if (c.tokenizer === 'gpt2') return Tokenizer.gpt2();
  if (c.tokenizer) return Tokenizer.fromFile(c.tokenizer);
  if (typeof c.model === 'string' && existsSync(path.join(c.model, 'tokenizer.json'))) {
    return Tokenizer.fromFile(path.join(c.model, 'tokenizer.json'));
  }
  throw configError("tokenizer: no tokenizer.json beside the model; set tokenizer to a file or 'gpt2'");
}

export const vocabSizeOf = (m: Model): number => Number(m.config.vocab_size);

/** The model's position count and the config.json field that holds it. */
export function positionsOf(m: Model): { positions: number; key: string } {
  const key = m.config.model_type === 'gpt2' ? 'n_positions' : 'max_position_embeddings';
  return { positions: Number(m.config[key]), key };
}

/** max_length against each model's positions, before any step (a longer batch fails inside one). */
export function checkMaxLength(c: TrainConfig, models: Array<[role: string, model: Model | null]>): void {
  for (const [role, m] of models) {
    if (!m) continue;
    const { positions, key } = positionsOf(m);
    if (c.max_length > positions) {
      throw configError(`max_length (${c.max_length}) exceeds the ${role}'s ${positions} positions (${key} in its config); set max_length to ${positions} or less`);
    }
    // The runner takes sequences up to a Mistral window only (within it, windowed attention is full
    // attention): refused here, not at the first long batch hours into the run.
    const window = toNativeConfig(m.config).slidingWindow ?? 0;
    if (window > 0 && c.max_length > window) {
      throw configError(`max_length (${c.max_length}) exceeds the ${role}'s sliding_window of ${window} positions (the runner takes sequences up to the window only); set max_length to ${window} or less`);
    }
  }
}

export function eosOf(policy: Model, tokenizer: Tokenizer | null): number {
  const fromConfig = policy.config.eos_token_id;
  const eos = Number.isSafeInteger(fromConfig) ? (fromConfig as number) : tokenizer?.eosTokenId;
  if (eos === undefined) throw configError('the model config has no eos_token_id and the tokenizer no end-of-text token');
  const vocab = vocabSizeOf(policy);
  if (eos < 0 || eos >= vocab) throw configError(`the end-of-text id ${eos} is outside the model's vocabulary (vocab_size ${vocab})`);
  return eos;
}

/** Reads the data and holds out the eval split (data.eval, or eval_size pairs of data.train). */
export async function readData(c: TrainConfig, forEval = false): Promise<{ train: SourcedPair[]; eval: SourcedPair[]; skippedLines: number }> {
  const read = async (file: string) => {
    const r = await readPreferences(file, c.data.format, c.data.skip_invalid, c.loss.name === 'sft');
    return { pairs: r.pairs.map((pair, i): SourcedPair => ({ pair, file, line: r.lines[i] })), skipped: r.skipped.length };
  };
  const tr = await read(c.data.train);
  let train = shuffled(tr.pairs, c.seed);
  let evalPairs: SourcedPair[] = [];
  let skippedLines = tr.skipped;
  if (c.data.eval) {
    const ev = await read(c.data.eval);
    evalPairs = ev.pairs;
    skippedLines += ev.skipped;
  } else if (c.data.eval_size > 0 && (c.eval_every > 0 || forEval)) {
    const n = c.data.eval_size < 1 ? Math.floor(train.length * c.data.eval_size) : Math.min(c.data.eval_size, train.length - 1);
    evalPairs = train.slice(0, n);
    train = train.slice(n);
  }
  return { train, eval: evalPairs, skippedLines };
}

/** Pairs tokenised between two turns of the event loop: ~0.1 s of GPT-2 text pairs. */
export const TOKENIZE_CHUNK = 500;

/**
 * tokenizeAll in chunks of TOKENIZE_CHUNK pairs, giving the event loop a turn between them, so
 * that a Ctrl-C during a large data set's tokenisation is served at once; null once `signal` is
 * aborted (the pairs left are not tokenised).
 */
export async function tokenizeAllYielding(raw: SourcedPair[], c: TrainConfig, tokenizer: Tokenizer | null, eos: number, vocab: number, signal?: AbortSignal): Promise<{ pairs: TokenizedPair[]; skipped: number } | null> {
  const pairs: TokenizedPair[] = [];
  let skipped = 0;
  for (let i = 0; i < raw.length; i += TOKENIZE_CHUNK) {
    if (i > 0) await new Promise((resolve) => setImmediate(resolve));
    if (signal?.aborted) return null;
    const part = tokenizeAll(raw.slice(i, i + TOKENIZE_CHUNK), c, tokenizer, eos, vocab);
    for (const p of part.pairs) pairs.push(p);
    skipped += part.skipped;
  }
  return { pairs, skipped };
}

/**
 * Tokenises each pair as the official code does, after checking every id against the model's
 * vocabulary: an id outside it stops the run with file:line (or, with data.skip_invalid, the pair
 * is counted in `skipped` and left out).
 */
export function tokenizeAll(raw: SourcedPair[], c: TrainConfig, tokenizer: Tokenizer | null, eos: number, vocab: number): { pairs: TokenizedPair[]; skipped: number } {
  // Multi-turn formats keep the latest turns of a long prompt, as the official code does for HH.
  const mode = c.truncation_mode ?? (c.data.format === 'hh' || c.data.format === 'conversation' ? 'keep_end' : 'keep_start');
  const o = { maxLength: c.max_length, maxPromptLength: c.max_prompt_length, truncationMode: mode } as const;
  const pairs: TokenizedPair[] = [];
  let skipped = 0;
  for (const { pair: given, file, line } of raw) {
    let p: TextPair | IdsPair;
    try {
      p = 'promptMessages' in given ? renderConversation(given, tokenizer!) : given;
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_TDPO_TOKENIZER') throw err; // no template: every line would fail
      if (!c.data.skip_invalid) throw codedError('RangeError', 'ERR_TDPO_DATA', `${file}:${line}: ${(err as Error).message} (set data.skip_invalid to count and skip such lines)`);
      skipped++;
      continue;
    }
    const pre = 'promptIds' in p;
    // A text prompt starts with the token transformers' tokenizer(prompt) puts first (Llama's BOS);
    // chat templates write their own.
    const first = tokenizer?.prefixTokenId;
    const bos = 'prompt' in p && !('promptMessages' in given) && first !== undefined ? [first] : [];
    const fields: Array<[string, ArrayLike<number>]> = 'promptIds' in p
      ? [['prompt_ids', p.promptIds], ['chosen_ids', p.chosenIds], ['rejected_ids', p.rejectedIds]]
      : [['prompt', [...bos, ...tokenizer!.encode(p.prompt)]], ['chosen', tokenizer!.encode(p.chosen)], ['rejected', tokenizer!.encode(p.rejected)]];
    let reason: string | null = null;
    for (const [name, ids] of fields) {
      for (let i = 0; i < ids.length && !reason; i++) {
        if (ids[i] < vocab) continue;
        reason = pre
          ? `${name}[${i}] = ${ids[i]} is outside the model's vocabulary (vocab_size ${vocab})`
          : `the tokenizer gives id ${ids[i]} in "${name}", outside the model's vocabulary (vocab_size ${vocab}); is it the model's tokenizer?`;
      }
      if (reason) break;
    }
    const pair = reason ? null : tokenizePair(fields[0][1], fields[1][1], fields[2][1], eos, o);
    // Logits at t score the token at t + 1, so a token at position 0 is never scored: an empty
    // prompt with a response cut to one token leaves nothing to learn from (an SFT mean of 0 / 0).
    const sides = c.loss.name === 'sft' ? (['chosen'] as const) : (['chosen', 'rejected'] as const); // SFT reads no rejected response
    const unscored = pair && sides.find((side) => !pair[side].labels.some((l, t) => t > 0 && l !== -100));
    if (unscored) reason = `the ${unscored} response has no token to score: with an empty prompt a sequence's first token is never scored, and truncation to max_length ${c.max_length} left it one token`;
    if (reason || !pair) {
      if (!c.data.skip_invalid) throw codedError('RangeError', 'ERR_TDPO_DATA', `${file}:${line}: ${reason} (set data.skip_invalid to count and skip such lines)`);
      skipped++;
      continue;
    }
    pairs.push(pair);
  }
  return { pairs, skipped };
}

/**
 * A conversational pair as text, the way TRL's maybe_apply_chat_template splits it: the prompt
 * rendered with the generation prompt (or, ending in an assistant message, continuing it), then
 * the prompt cut to what it shares with both whole conversations (templates such as DeepSeek-R1's
 * open a reply differently from how a finished reply starts), each response being the rest.
 */
function renderConversation(p: MessagesPair, tokenizer: Tokenizer): TextPair {
  const continues = p.promptMessages[p.promptMessages.length - 1].role === 'assistant';
  const prompt = tokenizer.applyChatTemplate(p.promptMessages, continues ? { continueFinalMessage: true } : { addGenerationPrompt: true });
  const chosen = tokenizer.applyChatTemplate([...p.promptMessages, ...p.chosenMessages]);
  const rejected = tokenizer.applyChatTemplate([...p.promptMessages, ...p.rejectedMessages]);
  let n = 0;
  const most = Math.min(prompt.length, chosen.length, rejected.length);
  while (n < most && prompt[n] === chosen[n] && prompt[n] === rejected[n]) n++;
  if (n > 0 && /[\uD800-\uDBFF]/.test(prompt[n - 1])) n--; // never half a surrogate pair
  for (const [name, text] of [['chosen', chosen], ['rejected', rejected]]) {
    if (text.length === n) throw new Error(`"${name}" renders as nothing after the prompt`);
  }
  return { prompt: prompt.slice(0, n), chosen: chosen.slice(n), rejected: rejected.slice(n) };
}

/** The length of a pair's rows once collated (the longer of its two). */
export const pairLength = (p: TokenizedPair): number => Math.max(p.chosen.inputIds.length, p.rejected.inputIds.length);

/** Pairs from shortest to longest (a stable sort: equal lengths keep their order). */
export const byLength = (pairs: readonly TokenizedPair[]): TokenizedPair[] => [...pairs].sort((a, b) => pairLength(a) - pairLength(b));

/**
 * The pairs in the order one epoch trains on them: shuffled with the run's seed and the epoch;
 * with data.group_by_length, the whole batches of that order are then re-cut by length (each batch
 * pads to its longest pair, and random batches pad about twice the tokens on short, varied data)
 * and the batches shuffled. The leftover that makes no whole batch stays last and random, as
 * without grouping: drop_last leaves it out, or it is the smaller last batch.
 */
export function epochOrder(pairs: readonly TokenizedPair[], c: TrainConfig, epoch: number): TokenizedPair[] {
  const seed = c.seed + 1 + epoch;
  const order = shuffled(pairs, seed);
  if (!c.data.group_by_length) return order;
  const whole = order.length - (order.length % c.batch_size);
  const sorted = byLength(order.slice(0, whole));
  const batches: TokenizedPair[][] = [];
  for (let i = 0; i < whole; i += c.batch_size) batches.push(sorted.slice(i, i + c.batch_size));
  return [...shuffled(batches, seed ^ 0x2545f491).flat(), ...order.slice(whole)];
}

/** For SFT: the chosen rows only (prompt + chosen response, prompt labels -100). */
export function sftBatch(pairs: TokenizedPair[]) {
  const full = collatePairs(pairs);
  const [B, T] = full.shape;
  const half = (B / 2) * T;
  return {
    inputIds: full.inputIds.slice(0, half),
    labels: full.labels.slice(0, half),
    attentionMask: full.attentionMask!.slice(0, half),
    shape: [B / 2, T] as const,
  };
}
