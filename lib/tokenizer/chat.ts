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

export interface RenderOptions {
  /** Append the template's opening of an assistant reply. */
  addGenerationPrompt?: boolean;
  /** End the text inside the last message, which the reply continues (transformers' continue_final_message). */
  continueFinalMessage?: boolean;
}

/** Parsed on first use, so that a template that does not parse leaves encode() usable. */
export class ChatTemplate {
  readonly #source: string;
  readonly #specials: Json;
  readonly #where: string;
  #template: Template | undefined;

  constructor(source: string, specials: { bos_token?: string; eos_token?: string; unk_token?: string; pad_token?: string }, where: string) {
    this.#source = source;
    this.#specials = specials;
    this.#where = where;
  }

  #parsed(): Template {
    try {
      this.#template ??= new Template(this.#source);
    } catch (err) {
      throw codedError('RangeError', 'ERR_TDPO_TOKENIZER', `${this.#where}: the chat template does not parse: ${(err as Error).message}`);
    }
    return this.#template;
  }

  render(messages: readonly ChatMessage[], options: RenderOptions = {}): string {
    const template = this.#parsed();
    if (options.addGenerationPrompt && options.continueFinalMessage) {
      throw codedError('RangeError', 'ERR_TDPO_OPTION', 'addGenerationPrompt and continueFinalMessage cannot both be set');
    }
    let text: string;
    try {
      // raise_exception and strftime_now are the library's own globals (Llama 3.1's template dates
      // its system prompt with today's date, as under transformers).
      text = template.render({ ...this.#specials, messages, add_generation_prompt: options.addGenerationPrompt === true });
    } catch (err) {
      throw codedError('RangeError', 'ERR_TDPO_DATA', `the chat template failed: ${(err as Error).message}`);
    }
    if (!options.continueFinalMessage) return text;
    // As transformers: cut the text right after the final message's content (its trailing spaces
    // too, where the template kept them).
    const last = messages[messages.length - 1]?.content ?? '';
    const at = text.lastIndexOf(last.trim());
    if (last.trim() === '' || at < 0) throw codedError('RangeError', 'ERR_TDPO_DATA', 'continueFinalMessage: the final message does not appear in the rendered conversation');
    const kept = text.slice(at, at + last.trimStart().length) === last ? last.trimStart().length : last.trim().length;
    return text.slice(0, at + kept);
  }
}
