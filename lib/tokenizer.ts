// Tokenizers, fully offline: Hugging Face tokenizer.json files and GPT-2's BPE with no file at all
// (from the ranks js-tiktoken ships). Byte-level BPE runs on our own pipeline (lib/tokenizer/):
// encoding time is linear in the input (O(n log n) within one pre-token) whatever the text or the
// file, where js-tiktoken's merge loop and V8's backtracking regexes were quadratic or worse.
// Callers' mistakes are errors with codes: ERR_TDPO_TYPE (not a string / not an array of ids),
// ERR_TDPO_INPUT (an id that is not an integer in the vocabulary), ERR_TDPO_TOKENIZER (the file).
import { readTextFile } from './io/files.js';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { codedError, isArrayOrTypedArray } from './errors.js';
import { loadGpt2 } from './tokenizer/gpt2-ranks.js';
import { ChatTemplate, readChatTemplate, tokenText, type ChatMessage, type RenderOptions } from './tokenizer/chat.js';
import { type Backend, loadTokenizerJson } from './tokenizer/hf-json.js';

export type { ChatMessage, RenderOptions };

let gpt2: { backend: Backend; eosTokenId: number | undefined; vocabSize: number } | undefined;

/** What tokenizer_config.json (and the post_processor) say beyond the vocabulary. */
interface Specials {
  bosTokenId?: number;
  prefixTokenId?: number;
  chat?: ChatTemplate | null;
}

export class Tokenizer {
  readonly #backend: Backend;
  readonly #chat: ChatTemplate | null;
  /** Token id of the end-of-text token (tokenizer_config.json's eos_token, else <|endoftext|>), when the tokenizer has one. */
  readonly eosTokenId: number | undefined;
  /** tokenizer_config.json's bos_token, when it has one. */
  readonly bosTokenId: number | undefined;
  /**
   * The token transformers' tokenizer(text) starts with, if any: the leading special token of
   * tokenizer.json's post_processor template (Llama 3's <|begin_of_text|>), else bos_token where
   * tokenizer_config.json has add_bos_token. The text data formats start each prompt with it;
   * encode() itself never adds special tokens.
   */
  readonly prefixTokenId: number | undefined;
  readonly vocabSize: number;

  private constructor(backend: Backend, eosTokenId: number | undefined, vocabSize: number, specials: Specials = {}) {
    this.#backend = backend;
    this.eosTokenId = eosTokenId;
    this.vocabSize = vocabSize;
    this.bosTokenId = specials.bosTokenId;
    this.prefixTokenId = specials.prefixTokenId;
    this.#chat = specials.chat ?? null;
  }

  /** Whether tokenizer_config.json (or chat_template.jinja) carried a chat template. */
  get hasChatTemplate(): boolean {
    return this.#chat !== null;
  }

  /**
   * The conversation as text, rendered with the tokenizer's chat template as transformers'
   * apply_chat_template(messages, tokenize=False, add_generation_prompt, continue_final_message)
   * renders it. ERR_TDPO_TOKENIZER without a template or when it does not parse; ERR_TDPO_DATA
   * when the template refuses the messages.
   */
  applyChatTemplate(messages: readonly ChatMessage[], options: RenderOptions = {}): string {
    if (!this.#chat) {
      throw codedError('RangeError', 'ERR_TDPO_TOKENIZER', "this tokenizer has no chat template (tokenizer_config.json's chat_template, or chat_template.jinja): conversational data needs one");
    }
    return this.#chat.render(messages, options);
  }

  /**
   * Loads a Hugging Face tokenizer.json (a tokenizer_config.json beside it is read too, when
   * present). No special tokens are added on encode, as the TDPO code tokenises.
   */
  static fromFile(file: string): Tokenizer {
    if (typeof file !== 'string') throw codedError('TypeError', 'ERR_TDPO_TYPE', `Tokenizer.fromFile: the path must be a string, got ${typeof file}`);
    const read = (f: string) => {
      // readTextFile's own errors already name the file; only the parse is wrapped here.
      const text = readTextFile(f, 'ERR_TDPO_TOKENIZER', 'tokenizer file');
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch (err) {
        throw codedError('Error', 'ERR_TDPO_TOKENIZER', `cannot read ${f}: ${(err as Error).message}`);
      }
      if (!json || typeof json !== 'object' || Array.isArray(json)) throw codedError('RangeError', 'ERR_TDPO_TOKENIZER', `${f} is not a JSON object`);
      return json as Record<string, unknown>;
    };
    const json = read(file);
    const configFile = path.join(path.dirname(file), 'tokenizer_config.json');
    const config = existsSync(configFile) ? read(configFile) : {};
    const source = readChatTemplate(path.dirname(file), config);
    const specials = { bos_token: tokenText(config.bos_token), eos_token: tokenText(config.eos_token), unk_token: tokenText(config.unk_token), pad_token: tokenText(config.pad_token) };
    const chat = source === null ? null : new ChatTemplate(source, specials, configFile);
    try {
      const { backend, eosTokenId, bosTokenId, prefixTokenId, vocabSize } = loadTokenizerJson(file, json, config);
      return new Tokenizer(backend, eosTokenId, vocabSize, { bosTokenId, prefixTokenId, chat });
    } catch (err) {
      if ((err as { code?: unknown }).code) throw err;
      // a malformed file that got past the checks: still the file's fault, with the code
      throw codedError('RangeError', 'ERR_TDPO_TOKENIZER', `${file} is not a tokenizer this library can run: ${(err as Error).message}`);
    }
  }

  /** GPT-2's tokenizer, with no files: identical to GPT-2's tokenizer.json. */
  static gpt2(): Tokenizer {
    if (!gpt2) {
      const { pipeline, eosTokenId, vocabSize } = loadGpt2();
      gpt2 = { backend: pipeline, eosTokenId, vocabSize };
    }
    return new Tokenizer(gpt2.backend, gpt2.eosTokenId, gpt2.vocabSize);
  }

  encode(text: string): Int32Array {
    if (typeof text !== 'string') throw codedError('TypeError', 'ERR_TDPO_TYPE', `encode: text must be a string, got ${describe(text)}`);
    return this.#backend.encode(text);
  }

  /**
   * The text of `ids`. An id that is not a token of this vocabulary throws ERR_TDPO_INPUT, unless
   * `skipUnknown` (for model output: a model's embedding table may be padded past its
   * tokenizer's vocabulary, as Pythia's 50304 rows against 50277 ids, and sample such an id).
   */
  decode(ids: ArrayLike<number>, options: { skipUnknown?: boolean } = {}): string {
    // A plain { length: 2 ** 40 } would be walked element by element.
    if (!isArrayOrTypedArray(ids)) {
      throw codedError('TypeError', 'ERR_TDPO_TYPE', `decode: ids must be an array or typed array of token ids, got ${describe(ids)}`);
    }
    const known = (id: number) => Number.isInteger(id) && id >= 0 && id < this.vocabSize && this.#backend.has(id);
    if (options.skipUnknown) ids = Array.prototype.filter.call(ids, known) as number[];
    for (let i = 0; i < ids.length; i++) {
      if (!known(ids[i])) {
        throw codedError('RangeError', 'ERR_TDPO_INPUT', `decode: ids[${i}] = ${describe(ids[i])} is not a token id of this vocabulary (integers in [0, ${this.vocabSize}))`);
      }
    }
    return ids.length === 0 ? '' : this.#backend.decode(ids);
  }
}

function describe(v: unknown): string {
  if (typeof v === 'string') return `a string of ${v.length} characters`;
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean' || v == null) return String(v);
  return Array.isArray(v) ? 'an array' : typeof v;
}
