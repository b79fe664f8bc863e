// Tokenizers, fully offline: Hugging Face tokenizer.json files (byte-level BPE as GPT-2 and
// GPT-NeoX use) through @huggingface/tokenizers, and GPT-2's own BPE with no file at all, from the
// ranks js-tiktoken ships (tiktoken's `gpt2` encoding is GPT-2's vocabulary and merges).
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import type { Tiktoken as TiktokenType, TiktokenBPE } from 'js-tiktoken/lite';
import { codedError } from './errors.js';
import packageRoot from './package-root.cjs';

// The GPT-2 ranks (0.5 MB of source) load on first use, not with the package.
const requireFromRoot = createRequire(path.join(packageRoot, 'package.json'));

interface Backend {
  encode(text: string): number[];
  decode(ids: number[]): string;
}

export class Tokenizer {
  readonly #backend: Backend;
  /** Token id of the end-of-text token, when the tokenizer has one. */
  readonly eosTokenId: number | undefined;
  readonly vocabSize: number;

  private constructor(backend: Backend, eosTokenId: number | undefined, vocabSize: number) {
    this.#backend = backend;
    this.eosTokenId = eosTokenId;
    this.vocabSize = vocabSize;
  }

  /**
   * Loads a Hugging Face tokenizer.json (a tokenizer_config.json beside it is read too, when
   * present). No special tokens are added on encode, as the TDPO code tokenises.
   */
  static fromFile(file: string): Tokenizer {
    const read = (f: string) => {
      try {
        return JSON.parse(readFileSync(f, 'utf8')) as Record<string, unknown>;
      } catch (err) {
        throw codedError('Error', 'ERR_TDPO_TOKENIZER', `cannot read ${f}: ${(err as Error).message}`);
      }
    };
    const json = read(file);
    const configFile = path.join(path.dirname(file), 'tokenizer_config.json');
    const config = existsSync(configFile) ? read(configFile) : {};
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(json, config);
    } catch (err) {
      throw codedError('RangeError', 'ERR_TDPO_TOKENIZER', `${file} is not a tokenizer this library can run: ${(err as Error).message}`);
    }
    const model = json.model as { vocab?: Record<string, number> } | undefined;
    const added = (json.added_tokens ?? []) as Array<{ id: number; content: string }>;
    const ids = [...Object.values(model?.vocab ?? {}), ...added.map((t) => t.id)];
    const eos = added.find((t) => t.content === '<|endoftext|>' || t.content === (config.eos_token as string));
    return new Tokenizer(
      {
        encode: (text) => hf.encode(text, { add_special_tokens: false }).ids,
        decode: (ids) => hf.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false }),
      },
      eos?.id,
      ids.length ? Math.max(...ids) + 1 : 0,
    );
  }

  /** GPT-2's tokenizer, with no files: identical to GPT-2's tokenizer.json. */
  static gpt2(): Tokenizer {
    const { Tiktoken } = requireFromRoot('js-tiktoken/lite') as { Tiktoken: typeof TiktokenType };
    const ranks = requireFromRoot('js-tiktoken/ranks/gpt2') as TiktokenBPE | { default: TiktokenBPE };
    const enc = new Tiktoken('default' in ranks ? ranks.default : ranks);
    return new Tokenizer(
      // 'all': "<|endoftext|>" in the text is the special token, as tokenizer.json treats it.
      { encode: (text) => enc.encode(text, 'all'), decode: (ids) => enc.decode(ids) },
      50256,
      50257,
    );
  }

  encode(text: string): Int32Array {
    return Int32Array.from(this.#backend.encode(text));
  }

  decode(ids: ArrayLike<number>): string {
    return ids.length === 0 ? '' : this.#backend.decode(Array.from(ids));
  }
}
