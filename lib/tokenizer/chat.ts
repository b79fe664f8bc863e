// Chat templates: the Jinja template a model's tokenizer_config.json (or chat_template.jinja)
// carries, rendered by @huggingface/jinja, the implementation written for exactly these templates
// (transformers.js uses it). The context is what transformers' apply_chat_template passes:
// messages, add_generation_prompt and the special tokens' text.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import { codedError } from '../errors.js';

export interface ChatMessage {
  role: string;
  content: string;
}

type Json = Record<string, unknown>;

/** A special token's text in tokenizer_config.json: a string, or an AddedToken object's content. */
export function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  const content = (v as Json | null | undefined)?.content;
  return typeof content === 'string' ? content : undefined;
}

/**
 * The template source: tokenizer_config.json's chat_template (a string, or a list of named
 * templates, of which "default"), else chat_template.jinja beside it (transformers >= 4.43 saves
 * it there); null when neither exists.
 */
export function readChatTemplate(dir: string, config: Json): string | null {
  const t = config.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t.find((x) => (x as Json)?.name === 'default') as Json | undefined;
    if (typeof named?.template === 'string') return named.template;
  }
  const file = path.join(dir, 'chat_template.jinja');
  return existsSync(file) ? readFileSync(file, 'utf8') : null;
}

export class ChatTemplate {
  readonly #template: Template;
  readonly #specials: Json;

  constructor(source: string, specials: { bos_token?: string; eos_token?: string; unk_token?: string; pad_token?: string }, where: string) {
    try {
      this.#template = new Template(source);
    } catch (err) {
      throw codedError('RangeError', 'ERR_TDPO_TOKENIZER', `${where}: the chat template does not parse: ${(err as Error).message}`);
    }
    this.#specials = specials;
  }

  render(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string {
    try {
      // raise_exception and strftime_now are the library's own globals (Llama 3.1's template dates
      // its system prompt with today's date, as under transformers).
      return this.#template.render({ ...this.#specials, messages, add_generation_prompt: addGenerationPrompt });
    } catch (err) {
      throw codedError('RangeError', 'ERR_TDPO_DATA', `the chat template failed: ${(err as Error).message}`);
    }
  }
}
