// Chat templates: the Jinja template a model's tokenizer_config.json (or chat_template.jinja)
// carries, rendered by @huggingface/jinja, the implementation written for exactly these templates
// (transformers.js uses it). The context is what transformers' apply_chat_template passes:
// messages, add_generation_prompt and the special tokens' text.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import { codedError } from '../errors.js';
import { readTextFile } from '../io/files.js';
import { metered } from './chat-meter.js';

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
  return existsSync(file) ? readTextFile(file, 'ERR_TDPO_TOKENIZER', 'chat template') : null;
}

export interface RenderOptions {
  /** Append the template's opening of an assistant reply. */
  addGenerationPrompt?: boolean;
  /** End the text inside the last message, which the reply continues (transformers' continue_final_message). */
  continueFinalMessage?: boolean;
}

/** Loop values one render may ask range() for; real templates loop over a few messages. */
export const RANGE_BUDGET = 1_000_000;

/**
 * The library declares its own range() in every render and refuses to declare a name twice, so
 * the template's calls are pointed at ours instead: each name `range` in the parsed template,
 * except an attribute (x.range) or a keyword argument's name. Iterative: templates nest deeply.
 */
const RANGE = '__tdpo_range';
function renameRange(root: unknown): void {
  const stack: unknown[] = [root];
  while (stack.length) {
    const node = stack.pop();
    if (Array.isArray(node)) {
      stack.push(...node);
      continue;
    }
    if (!node || typeof node !== 'object') continue;
    const n = node as Record<string, unknown>;
    if (n.type === 'Identifier' && n.value === 'range') n.value = RANGE;
    else if (n.type === 'MemberExpression' && !n.computed) stack.push(n.object);
    else if (n.type === 'KeywordArgumentExpression') stack.push(n.value);
    else for (const v of Object.values(n)) if (v && typeof v === 'object') stack.push(v);
  }
}

/**
 * The library's range() with a budget. Rendering runs on the event loop with no limit of its own:
 * range(1e9) aborted the process (V8 cannot grow an array that far) and nested range(1e5) loops
 * hung it past SIGTERM. As Python's, it takes integers.
 */
function budgetedRange(): (start: number, stop?: number, step?: number) => number[] {
  let left = RANGE_BUDGET;
  return (start, stop, step = 1) => {
    if (stop === undefined) [start, stop] = [0, start];
    if (![start, stop, step].every(Number.isSafeInteger)) throw new Error(`range() takes integers, got range(${[start, stop, step].join(', ')})`);
    if (step === 0) throw new Error('range() step must not be zero');
    const n = Math.max(0, Math.ceil((stop - start) / step));
    if (n > left) throw new Error(`range() would take the render past ${RANGE_BUDGET.toLocaleString('en-US')} loop values`);
    left -= n;
    return Array.from({ length: n }, (_, i) => start + i * step);
  };
}

function inputChars(messages: readonly ChatMessage[]): number {
  let n = 0;
  for (const m of messages) n += (typeof m?.content === 'string' ? m.content.length : 0) + (typeof m?.role === 'string' ? m.role.length : 0);
  return n;
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
      if (!this.#template) {
        this.#template = new Template(this.#source);
        renameRange(this.#template.parsed);
      }
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
      const context = { ...this.#specials, [RANGE]: budgetedRange(), messages, add_generation_prompt: options.addGenerationPrompt === true };
      text = metered(inputChars(messages), () => template.render(context));
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
