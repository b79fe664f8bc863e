// Chat templates and the conversational data format: tokenizer_config.json's template rendered by
// @huggingface/jinja as transformers renders it, special tokens from tokenizer_config.json, and
// conversations split into prompt and responses as TRL splits them, with every failure a coded
// error naming file:line.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, Tokenizer, train } from '../lib/index.js';
import { loadTokenizer, readData, tokenizeAll } from '../lib/train/data.js';
import { templates, vocabSizeOf, writeChatTokenizer, type Family } from './chat-fixtures.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'tdpo-chat-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const folder = (family: Family, config: Record<string, unknown> = {}) => {
  const dir = path.join(tmp, `${family}-${n++}`);
  return { dir, ...writeChatTokenizer(dir, family, config) };
};
const convo = [{ role: 'user', content: 'hi there' }];
const reply = [{ role: 'assistant', content: 'hello' }];

describe('chat templates', () => {
  it('renders a Llama 3 template exactly, BOS and headers as single special tokens', () => {
    const { dir, added } = folder('llama3');
    const t = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
    expect(t.hasChatTemplate).toBe(true);
    const text = t.applyChatTemplate(convo, { addGenerationPrompt: true });
    expect(text).toBe('<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n');
    const ids = Array.from(t.encode(text));
    expect(ids[0]).toBe(added['<|begin_of_text|>']);
    expect(ids[1]).toBe(added['<|start_header_id|>']);
    expect(ids.filter((id) => id >= 260)).toEqual([260, 262, 263, 264, 262, 263]); // bos, hdr, /hdr, eot, hdr, /hdr
    expect(t.eosTokenId).toBe(added['<|eot_id|>']);
    expect(t.bosTokenId).toBe(added['<|begin_of_text|>']);
    expect(t.prefixTokenId).toBe(added['<|begin_of_text|>']); // from the post_processor's template
  });

  it("renders Qwen2's default system prompt and SmolLM's plain ChatML", () => {
    const q = Tokenizer.fromFile(path.join(folder('qwen2').dir, 'tokenizer.json'));
    expect(q.applyChatTemplate([...convo, ...reply])).toBe(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n',
    );
    const s = Tokenizer.fromFile(path.join(folder('smollm').dir, 'tokenizer.json'));
    expect(s.applyChatTemplate(convo, { addGenerationPrompt: true })).toBe('<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n');
  });

  it("takes tokenizer_config.json's eos_token over <|endoftext|>, as transformers does", () => {
    const { dir, added } = folder('qwen2');
    expect(Tokenizer.fromFile(path.join(dir, 'tokenizer.json')).eosTokenId).toBe(added['<|im_end|>']);
    const plain = folder('qwen2', { eos_token: undefined });
    expect(Tokenizer.fromFile(path.join(plain.dir, 'tokenizer.json')).eosTokenId).toBe(plain.added['<|endoftext|>']);
  });

  it('reads a template from chat_template.jinja and from a list of named templates', () => {
    const a = folder('smollm', { chat_template: undefined });
    writeFileSync(path.join(a.dir, 'chat_template.jinja'), templates.smollm);
    expect(Tokenizer.fromFile(path.join(a.dir, 'tokenizer.json')).applyChatTemplate(convo)).toBe('<|im_start|>user\nhi there<|im_end|>\n');
    const b = folder('smollm', { chat_template: [{ name: 'tool_use', template: 'x' }, { name: 'default', template: templates.smollm }] });
    expect(Tokenizer.fromFile(path.join(b.dir, 'tokenizer.json')).applyChatTemplate(convo)).toBe('<|im_start|>user\nhi there<|im_end|>\n');
  });

  it('continueFinalMessage ends the text inside the last message, as transformers does', () => {
    const t = Tokenizer.fromFile(path.join(folder('smollm').dir, 'tokenizer.json'));
    expect(t.applyChatTemplate([...convo, { role: 'assistant', content: 'Sure, ' }], { continueFinalMessage: true })).toBe('<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\nSure, ');
  });

  it('a missing template, one that does not parse (encode still works), and raise_exception are coded errors', () => {
    const none = Tokenizer.fromFile(path.join(folder('qwen2', { chat_template: undefined }).dir, 'tokenizer.json'));
    expect(none.hasChatTemplate).toBe(false);
    expect(() => none.applyChatTemplate(convo)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_TOKENIZER', message: expect.stringContaining('no chat template') }));
    const broken = Tokenizer.fromFile(path.join(folder('qwen2', { chat_template: '{% for %}' }).dir, 'tokenizer.json'));
    expect(Array.from(broken.encode('hello'))).toEqual([258, 111]);
    expect(() => broken.applyChatTemplate(convo)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_TOKENIZER', message: expect.stringContaining('does not parse') }));
    const strict = Tokenizer.fromFile(path.join(folder('qwen2', { chat_template: "{% if messages[0]['role'] != 'system' %}{{ raise_exception('a system message must come first') }}{% endif %}" }).dir, 'tokenizer.json'));
    expect(() => strict.applyChatTemplate(convo)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_DATA', message: expect.stringContaining('a system message must come first') }));
  });
});

describe('hostile chat templates', () => {
  const render = (template: string) => Tokenizer.fromFile(path.join(folder('qwen2', { chat_template: template }).dir, 'tokenizer.json')).applyChatTemplate(convo);
  it('range() is budgeted: range(1000000000) aborted the process and nested loops hung it; now ERR_TDPO_DATA at once', () => {
    const nested = '{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}';
    for (const t of ['{% for i in range(1000000000) %}{% endfor %}', '{{ range(1000000000)|length }}', nested]) {
      const t0 = Date.now();
      // The nested loops run ~20 million iterations before range()'s budget trips: on a loaded
      // machine (the GPU check's suite, 16 test workers) the 2 s limit on a render came first.
      const message = t === nested ? expect.stringMatching(/range\(\)|ran past 2000 ms/) : expect.stringContaining('range()');
      expect(() => render(t), t).toThrow(expect.objectContaining({ code: 'ERR_TDPO_DATA', message }));
      expect(Date.now() - t0, t).toBeLessThan(5000);
    }
  });
  // In a child process: on the old code these aborted Node (V8 "invalid size", SIGTRAP; heap out
  // of memory, SIGABRT), which would take the test runner down with them.
  const distEntry = path.resolve(__dirname, '..', 'dist', 'cjs', 'index.js');
  const doubled = (n: number) => `{% set ns = namespace(s='x', l=[]) %}{% for i in range(${n}) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}`;
  const hostile: Record<string, string> = {
    'replace() doubling a string 40 times (aborted: invalid size)': "{% set ns = namespace(s='xy') %}{% for i in range(40) %}{% set ns.s = ns.s.replace('x', ns.s) %}{% endfor %}{{ ns.s|length }}",
    'replace() copies of a 2^28-character string kept in a list (aborted: invalid size)': `${doubled(28)}{% for i in range(40) %}{% set ns.l = ns.l + [ns.s.replace('x', 'y')] %}{% endfor %}{{ ns.l|length }}`,
    'upper-cased copies of a 2^28-character string (aborted: heap out of memory)': `${doubled(28)}{% for i in range(40) %}{% set ns.l = ns.l + [ns.s|upper] %}{% endfor %}{{ ns.l|length }}`,
    'loops nested three deep over a 4,000-item list (6.4e10 iterations)': '{% set l = range(4000)|list %}{% for a in l %}{% for b in l %}{% for c in l %}{% endfor %}{% endfor %}{% endfor %}',
    'a macro calling itself twice, 40 deep (2^40 calls)': '{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}',
    // One value per test, each reading the whole list: the time limit stops it (about 250 s before).
    "300,000 tests of 'in' a 300,000-item list": '{% set l = range(300000) %}{% for i in range(300000) %}{% if -1 in l %}Y{% endif %}{% endfor %}',
  };
  for (const [name, template] of Object.entries(hostile)) {
    it(`values are budgeted: ${name} is ERR_TDPO_DATA within seconds`, () => {
      const file = path.join(folder('qwen2', { chat_template: template }).dir, 'tokenizer.json');
      const code = `const { Tokenizer } = require(${JSON.stringify(distEntry)});
        try { Tokenizer.fromFile(${JSON.stringify(file)}).applyChatTemplate([{ role: 'user', content: 'hi' }]); console.log('rendered'); }
        catch (e) { console.log(e.code, e.message); }`;
      const t0 = Date.now();
      const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 60_000 });
      expect({ status: r.status, signal: r.signal, out: r.stdout.trim() }).toEqual({ status: 0, signal: null, out: expect.stringMatching(/^ERR_TDPO_DATA the chat template failed: the template (made more values than a render may|ran past 2000 ms)/) });
      expect(Date.now() - t0).toBeLessThan(15_000);
    });
  }
  it('the value budget grows with the conversation: a 10-million-character message renders through the Llama 3 template', () => {
    const t = Tokenizer.fromFile(path.join(folder('llama3').dir, 'tokenizer.json'));
    const long = 'x'.repeat(10_000_000);
    expect(t.applyChatTemplate([{ role: 'user', content: long }]).length).toBe(long.length + '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|eot_id|>'.length);
  });
  it('range() as templates use it still renders as Python would', () => {
    expect(render('{% for i in range(3) %}{{ i }}{% endfor %}|{% for i in range(5, 1, -2) %}{{ i }}{% endfor %}|{{ range(2, 8, 3)|length }}|{{ range(0)|length }}')).toBe('012|53|2|0');
  });
});

describe("data.format 'conversation'", () => {
  /** A config over `lines` written as JSONL, with the `family` fixture tokenizer. */
  function setup(family: Family, lines: unknown[], tokenizerConfig: Record<string, unknown> = {}, format = 'conversation') {
    const t = folder(family, tokenizerConfig);
    const data = path.join(t.dir, 'train.jsonl');
    writeFileSync(data, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
    const model = { model_type: 'llama', vocab_size: vocabSizeOf(family), max_position_embeddings: 256, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64, tie_word_embeddings: true };
    const c = loadConfig(null, [], { model, tokenizer: path.join(t.dir, 'tokenizer.json'), data: { train: data, format: format as 'conversation', eval_size: 0 }, batch_size: 2, gradient_accumulation_steps: 1, max_length: 256, max_prompt_length: 128, output_dir: path.join(t.dir, 'out'), max_steps: 2, warmup_steps: 0, lr: 1e-3, eval_every: 0, samples: 0, save_every: 0 });
    return { ...t, c };
  }

  it("splits each pair as TRL does: the prompt with the generation prompt, each reply after it, then EOS", async () => {
    const { c, added, eos } = setup('qwen2', [{ prompt: convo, chosen: reply, rejected: [{ role: 'assistant', content: 'no' }] }]);
    const tokenizer = loadTokenizer(c);
    const { train: raw } = await readData(c);
    const { pairs } = tokenizeAll(raw, c, tokenizer, eos, vocabSizeOf('qwen2'));
    const prompt = tokenizer.encode(tokenizer.applyChatTemplate(convo, { addGenerationPrompt: true }));
    const chosen = Array.from(pairs[0].chosen.inputIds);
    expect(chosen.slice(0, prompt.length)).toEqual(Array.from(prompt));
    // "hello<|im_end|>\n" = [hell, o, <|im_end|>, \n], then the EOS the official code appends.
    expect(chosen.slice(prompt.length)).toEqual([258, 111, added['<|im_end|>'], 10, eos]);
    const labels = Array.from(pairs[0].chosen.labels);
    expect(labels.slice(0, prompt.length).every((l) => l === -100)).toBe(true);
    expect(labels.slice(prompt.length)).toEqual(chosen.slice(prompt.length));
  });

  it("a template whose generation prompt is not how a reply starts (DeepSeek-R1's <think>): the common prefix, as TRL", async () => {
    const think = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}";
    const { c, eos } = setup('smollm', [{ prompt: convo, chosen: reply, rejected: reply }], { chat_template: think });
    const t = loadTokenizer(c);
    const { pairs } = tokenizeAll((await readData(c)).train, c, t, eos, vocabSizeOf('smollm'));
    const prompt = '<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n';
    expect(Array.from(pairs[0].chosen.inputIds)).toEqual([...t.encode(prompt), ...t.encode('hello<|im_end|>\n'), eos]);
  });

  it('a prompt ending in an assistant message is continued (continue_final_message, as TRL)', async () => {
    const { c, eos } = setup('smollm', [{ prompt: [...convo, { role: 'assistant', content: 'Sure,' }], chosen: [{ role: 'assistant', content: ' gladly' }], rejected: [{ role: 'assistant', content: ' no' }] }]);
    const t = loadTokenizer(c);
    const { pairs } = tokenizeAll((await readData(c)).train, c, t, eos, vocabSizeOf('smollm'));
    const ids = Array.from(pairs[0].chosen.inputIds);
    const labels = Array.from(pairs[0].chosen.labels);
    const response = ids.filter((_, i) => labels[i] !== -100);
    expect(t.decode(response.slice(0, -1))).toBe('<|im_end|>\n<|im_start|>assistant\n gladly<|im_end|>\n');
  });

  it('a malformed message, and a reply that renders as nothing, name file:line', async () => {
    const bad = setup('smollm', [{ prompt: convo, chosen: reply, rejected: reply }, { prompt: convo, chosen: [{ role: 'assistant' }], rejected: reply }]);
    await expect(readData(bad.c)).rejects.toMatchObject({ code: 'ERR_TDPO_DATA', message: expect.stringMatching(/train\.jsonl:2: chosen\[0\] must be a message/) });
    const usersOnly = "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}\\n{% endif %}{% endfor %}";
    const odd = setup('smollm', [{ prompt: convo, chosen: reply, rejected: reply }], { chat_template: usersOnly });
    const { train: raw } = await readData(odd.c);
    expect(() => tokenizeAll(raw, odd.c, loadTokenizer(odd.c), odd.eos, vocabSizeOf('smollm'))).toThrow(
      expect.objectContaining({ code: 'ERR_TDPO_DATA', message: expect.stringMatching(/train\.jsonl:1: "chosen" renders as nothing after the prompt/) }),
    );
    const skipping = { ...odd.c, data: { ...odd.c.data, skip_invalid: true } };
    expect(tokenizeAll(raw, skipping, loadTokenizer(skipping), odd.eos, vocabSizeOf('smollm')).skipped).toBe(1);
  });

  it("text pairs start with the token tokenizer(prompt) puts first: Llama 3's post-processor BOS, add_bos_token's, else none", async () => {
    for (const [family, bos, extra] of [['llama3', 260, {}], ['qwen2', null, {}], ['qwen2', 260, { add_bos_token: true, bos_token: '<|endoftext|>' }]] as const) {
      const { c, eos } = setup(family, [{ prompt: 'hi', chosen: ' hello', rejected: ' no' }], extra, 'pairs');
      const t = loadTokenizer(c);
      const { pairs } = tokenizeAll((await readData(c)).train, c, t, eos, vocabSizeOf(family));
      expect(Array.from(pairs[0].chosen.inputIds)).toEqual([...(bos === null ? [] : [bos]), ...t.encode('hi'), ...t.encode(' hello'), eos]);
    }
  });

  it('a tokenizer without a template, or with one that does not parse, is refused before any data is read', () => {
    const { c } = setup('qwen2', [{ prompt: convo, chosen: reply, rejected: reply }], { chat_template: undefined });
    expect(() => loadTokenizer(c)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining("data.format 'conversation' needs a chat template") }));
    const broken = setup('qwen2', [{ prompt: convo, chosen: reply, rejected: reply }], { chat_template: '{% if %}' });
    expect(() => loadTokenizer(broken.c)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_TOKENIZER', message: expect.stringContaining('does not parse') }));
  });

  it('trains a tiny Llama with TDPO2 on conversations, end to end', async () => {
    const lines = Array.from({ length: 4 }, (_, i) => ({ prompt: [{ role: 'user', content: `question ${i}` }], chosen: [{ role: 'assistant', content: 'hello there' }], rejected: [{ role: 'assistant', content: `no ${i}` }] }));
    const { c } = setup('llama3', lines);
    const result = await train(c, { log: () => {} });
    expect(result.steps).toBe(2);
    expect(Number.isFinite(result.lastMetrics?.loss)).toBe(true);
  });
});
