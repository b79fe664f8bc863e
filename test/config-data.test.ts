// Config (defaults, file, overrides, schema errors) and preference data (formats, HH, bad lines).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultConfig, loadConfig, Tokenizer } from '../lib/index.js';
import { readPreferences, shuffled, splitHh } from '../lib/data/preferences.js';
import { tokenizePair } from '../lib/data/tokenize.js';
import { epochOrder, pairLength, TOKENIZE_CHUNK, tokenizeAll, tokenizeAllYielding } from '../lib/train/data.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-cfg-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const f = path.join(dir, name);
  writeFileSync(f, text);
  return f;
};

describe('config', () => {
  it('has the paper defaults', () => {
    expect(defaultConfig).toMatchObject({
      loss: { name: 'tdpo2', alpha: 0.5, beta: 0.1 },
      batch_size: 64, optimizer: 'rmsprop', lr: 5e-6, warmup_steps: 150, max_grad_norm: 10,
      max_length: 512, max_prompt_length: 256, n_epochs: 1, seed: 0,
    });
  });

  it('reads YAML, then applies --set overrides in order', () => {
    const f = file('a.yaml', 'model: ./m\ndata:\n  train: t.jsonl\nloss:\n  name: dpo\nbatch_size: 8\n');
    const c = loadConfig(f, ['loss.beta=0.25', 'batch_size=16', 'data.eval=e.jsonl', 'max_steps=null', 'loss.name=tdpo1']);
    expect(c.loss).toEqual({ name: 'tdpo1', alpha: 0.5, beta: 0.25, fused_linear: true, chunk_mb: null });
    expect(c.batch_size).toBe(16);
    expect(c.data).toMatchObject({ train: 't.jsonl', eval: 'e.jsonl', format: 'pairs' });
    expect(c.max_steps).toBeNull();
    expect(loadConfig(f, ['device=cuda:1', 'dtype=bfloat16', 'gradient_checkpointing=true'])).toMatchObject({ device: 'cuda:1', dtype: 'bfloat16', gradient_checkpointing: true });
  });

  it('reads JSON too', () => {
    const f = file('a.json', JSON.stringify({ model: { model_type: 'gpt2' }, data: { train: 'x' } }));
    expect(loadConfig(f).model).toEqual({ model_type: 'gpt2' });
  });

  const bad: Array<[string, string[], string]> = [
    ['an unknown key, with a suggestion', ['batch_sise=4'], "unknown config key 'batch_sise' (did you mean 'batch_size'?)"],
    ['an unknown nested key', ['loss.bta=1'], "unknown config key 'loss.bta' (did you mean 'loss.beta'?)"],
    ['a wrong type', ['lr=fast'], 'lr must be a number >= 0, got "fast"'],
    ['a bad choice', ['loss.name=ppo'], 'loss.name must be one of "tdpo2", "tdpo1", "dpo", "sft"'],
    ['beta <= 0', ['loss.beta=0'], 'loss.beta must be a finite number > 0'],
    ['an accumulation that does not divide the batch', ['gradient_accumulation_steps=3'], 'multiple of gradient_accumulation_steps'],
    ['a non-boolean fused_linear', ['loss.fused_linear=maybe'], 'loss.fused_linear must be true or false'],
    ['a zero chunk budget', ['loss.chunk_mb=0'], 'loss.chunk_mb must be a number > 0, got 0'],
    ['a non-boolean gradient_checkpointing', ['gradient_checkpointing=1'], 'gradient_checkpointing must be true or false'],
    ['an unknown device', ['device=gpu'], "device must be 'cpu', 'cuda' or 'cuda:N'"],
  ];
  for (const [name, sets, message] of bad) {
    it(`rejects ${name}`, () => {
      const f = file('ok.yaml', 'model: ./m\ndata:\n  train: t.jsonl\n');
      expect(() => loadConfig(f, sets)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining(message) }));
    });
  }
});

describe('preference data', () => {
  it('reads the three formats', async () => {
    const pairs = file('p.jsonl', '{"prompt":"Q: hi","chosen":" yes","rejected":" no"}\n\n{"prompt":"","chosen":"a","rejected":"b"}\n');
    expect((await readPreferences(pairs, 'pairs', false)).pairs).toEqual([
      { prompt: 'Q: hi', chosen: ' yes', rejected: ' no' },
      { prompt: '', chosen: 'a', rejected: 'b' },
    ]);
    const tok = file('t.jsonl', '{"prompt_ids":[1,2],"chosen_ids":[3],"rejected_ids":[4,5]}\n');
    expect((await readPreferences(tok, 'tokenized', false)).pairs).toEqual([{ promptIds: [1, 2], chosenIds: [3], rejectedIds: [4, 5] }]);
    const hh = file('h.jsonl', JSON.stringify({ chosen: '\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: fine', rejected: '\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: bad' }) + '\n');
    expect((await readPreferences(hh, 'hh', false)).pairs).toEqual([
      { prompt: '\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant:', chosen: ' fine', rejected: ' bad' },
    ]);
  });

  it('HH: a rejected text that does not share the prompt is an error, not a slice', () => {
    expect(() => splitHh('\n\nHuman: a\n\nAssistant: x', '\n\nHuman: b\n\nAssistant: y')).toThrow('does not share the prompt');
  });

  it('reports a malformed line with file and line number, or counts it with skip_invalid', async () => {
    const f = file('bad.jsonl', '{"prompt":"a","chosen":"b","rejected":"c"}\n{"prompt":"a","chosen":"b"}\nnot json\n{"prompt":"a","chosen":"","rejected":"c"}\n{"prompt":1,"chosen":"b","rejected":"c"}\n');
    await expect(readPreferences(f, 'pairs', false)).rejects.toMatchObject({ code: 'ERR_TDPO_DATA', message: expect.stringContaining(`${f}:2: field "rejected" is missing`) });
    const r = await readPreferences(f, 'pairs', true);
    expect(r.pairs).toHaveLength(1);
    expect(r.skipped.map((s) => s.line)).toEqual([2, 3, 4, 5]);
    expect(r.skipped[1].reason).toContain('bad JSON');
    expect(r.skipped[2].reason).toBe('empty response');
    expect(r.skipped[3].reason).toContain('"prompt" is not a string');
  });

  it('splits lines as readline did (\\r\\n, \\r, \\n; a chunk may end between \\r and \\n), numbering them for errors', async () => {
    const ok = '{"prompt":"a","chosen":"b","rejected":"c"}';
    const f = file('breaks.jsonl', `${ok}\r\n${ok}\r${ok}\n\n${ok}\r\nnot json`);
    const r = await readPreferences(f, 'pairs', true);
    expect(r.lines).toEqual([1, 2, 3, 5]);
    expect(r.skipped).toEqual([{ line: 6, reason: expect.stringContaining('bad JSON') }]);
    // 64 KiB chunks: a \r\n astride two of them is one break.
    const pad = ' '.repeat(65536 - ok.length - 1);
    const g = file('astride.jsonl', `${ok}${pad}\r\n${ok}\n`);
    expect((await readPreferences(g, 'pairs', false)).lines).toEqual([1, 2]);
  });

  it('an endless line (/dev/zero) and an endless file of bad lines (/dev/urandom) are coded errors, and reading stops', async () => {
    await expect(readPreferences('/dev/zero', 'pairs', false)).rejects.toMatchObject({ code: 'ERR_TDPO_DATA', message: expect.stringContaining('/dev/zero:1: a line longer than') });
    // In a child: after the error the process must end (the stream used to read on for good).
    const code = `import(${JSON.stringify(path.resolve(__dirname, '..', 'dist', 'esm', 'data', 'preferences.js'))}).then((m) => m.readPreferences('/dev/urandom', 'pairs', false)).catch((e) => console.log(e.code));`;
    const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 30_000 });
    expect({ status: r.status, out: r.stdout.trim() }).toEqual({ status: 0, out: 'ERR_TDPO_DATA' });
  });

  it('a config or tokenizer that is not a regular file is refused before it is read', () => {
    expect(() => loadConfig('/dev/zero')).toThrow(expect.objectContaining({ code: 'ERR_TDPO_CONFIG', message: 'config /dev/zero is not a regular file' }));
    expect(() => Tokenizer.fromFile('/dev/zero')).toThrow(expect.objectContaining({ code: 'ERR_TDPO_TOKENIZER', message: expect.stringContaining('/dev/zero is not a regular file') }));
  });

  it('reports a missing file', async () => {
    await expect(readPreferences(path.join(dir, 'nope.jsonl'), 'pairs', false)).rejects.toMatchObject({ code: 'ERR_TDPO_DATA' });
  });

  it('shuffles reproducibly', () => {
    const xs = Array.from({ length: 50 }, (_, i) => i);
    expect(shuffled(xs, 3)).toEqual(shuffled(xs, 3));
    expect(shuffled(xs, 3)).not.toEqual(shuffled(xs, 4));
    expect([...shuffled(xs, 3)].sort((a, b) => a - b)).toEqual(xs);
  });

  it('SFT lines may leave the rejected response out (and only SFT lines)', async () => {
    const f = file('sft.jsonl', '{"prompt":"a","chosen":"b"}\n');
    expect((await readPreferences(f, 'pairs', false, true)).pairs).toEqual([{ prompt: 'a', chosen: 'b', rejected: 'b' }]);
    await expect(readPreferences(f, 'pairs', false)).rejects.toMatchObject({ code: 'ERR_TDPO_DATA', message: expect.stringContaining(':1: field "rejected" is missing') });
    const t = file('sft-ids.jsonl', '{"prompt_ids":[1],"chosen_ids":[2,3]}\n');
    expect((await readPreferences(t, 'tokenized', false, true)).pairs).toEqual([{ promptIds: [1], chosenIds: [2, 3], rejectedIds: [2, 3] }]);
    // A rejected field that is there is still checked.
    const bad = file('sft-bad.jsonl', '{"prompt_ids":[1],"chosen_ids":[2],"rejected_ids":"x"}\n');
    await expect(readPreferences(bad, 'tokenized', false, true)).rejects.toMatchObject({ code: 'ERR_TDPO_DATA' });
  });
});

describe('data.group_by_length', () => {
  const o = { maxLength: 64, maxPromptLength: 8, truncationMode: 'keep_start' } as const;
  // 100 pairs of 2..24 tokens in a scrambled order.
  const pairs = Array.from({ length: 100 }, (_, i) => tokenizePair([1], Array(1 + ((i * 37) % 23)).fill(i), [2], 0, o));
  const config = (group: boolean, seed = 3) => loadConfig(null, [], { model: 'm', data: { ...defaultConfig.data, train: 't', group_by_length: group }, batch_size: 16, seed });
  const spread = (order: typeof pairs) => {
    const out: number[] = [];
    for (let i = 0; i + 16 <= 96; i += 16) {
      const lens = order.slice(i, i + 16).map(pairLength);
      out.push(Math.max(...lens) - Math.min(...lens));
    }
    return Math.max(...out);
  };

  it('cuts each epoch into batches of similar length, every pair once, reproducibly', () => {
    const grouped = epochOrder(pairs, config(true), 0);
    expect([...grouped].sort((a, b) => a.chosen.inputIds[1] - b.chosen.inputIds[1])).toEqual(pairs);
    expect(spread(grouped)).toBeLessThanOrEqual(5);
    expect(spread(epochOrder(pairs, config(false), 0))).toBeGreaterThan(15); // random batches span nearly all 23 lengths
    expect(epochOrder(pairs, config(true), 0)).toEqual(grouped);
    expect(epochOrder(pairs, config(true), 1)).not.toEqual(grouped);
    expect(epochOrder(pairs, config(true, 4), 0)).not.toEqual(grouped);
  });

  it('leaves the leftover that makes no whole batch last and as without grouping', () => {
    const plain = epochOrder(pairs, config(false), 2);
    const grouped = epochOrder(pairs, config(true), 2);
    expect(grouped.slice(96)).toEqual(plain.slice(96));
    expect(new Set(grouped.slice(0, 96))).toEqual(new Set(plain.slice(0, 96)));
  });
});

describe('tokenising a data set in chunks', () => {
  const c = loadConfig(null, [], { model: 'm', data: { ...defaultConfig.data, train: 't', format: 'tokenized' } });
  const raw = Array.from({ length: 1200 }, (_, i) => ({ pair: { promptIds: [3, 4], chosenIds: [5 + (i % 7)], rejectedIds: [6] }, file: 'd.jsonl', line: i + 1 }));
  it('gives what tokenizeAll gives, and null once the signal is aborted between chunks', async () => {
    const whole = tokenizeAll(raw, c, null, 1, 64);
    expect(await tokenizeAllYielding(raw, c, null, 1, 64)).toEqual(whole);
    const abort = new AbortController();
    // Runs at the first turn of the event loop the chunks give: after the first chunk.
    setImmediate(() => abort.abort());
    expect(await tokenizeAllYielding(raw, c, null, 1, 64, abort.signal)).toBeNull();
    expect(TOKENIZE_CHUNK).toBeLessThan(raw.length);
  });
});
