// Nothing a caller does crashes, hangs or corrupts a run (issue 11, trainer/config/data): resume
// refuses a changed config unless allowed by name, one training per output_dir (a lock that
// survives kill -9), a finished run stays finished, resume repairs a half-written metrics tail and
// leftovers of an interrupted save, and data/config mistakes are named before the first step.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, Model, train, type TrainConfig } from '../lib/index.js';
import { latestCheckpoint, recoverCheckpointTemps, saveCheckpoint } from '../lib/train/checkpoint.js';
import { acquireLock } from '../lib/io/lock.js';
import { checkResumeConfig, truncateJsonl } from '../lib/train/resume.js';
import { rng } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-harden-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const V = 32;
const cli = path.resolve(__dirname, '..', 'bin', 'tdpo.js');

function pairLines(n: number, seed: number): string[] {
  const r = rng(seed);
  const tok = (parity: number) => 2 + 2 * Math.floor(r() * 15) + parity;
  return Array.from({ length: n }, () =>
    JSON.stringify({
      prompt_ids: Array.from({ length: 3 }, () => 2 + Math.floor(r() * 30)),
      chosen_ids: Array.from({ length: 4 }, () => tok(0)),
      rejected_ids: Array.from({ length: 4 }, () => tok(1)),
    }),
  );
}
function writeLines(name: string, lines: string[]): string {
  const f = path.join(dir, name);
  writeFileSync(f, `${lines.join('\n')}\n`);
  return f;
}
const trainFile = writeLines('train.jsonl', pairLines(64, 1));
const evalFile = writeLines('eval.jsonl', pairLines(8, 2));
const tinyModel = { model_type: 'gpt2', vocab_size: V, n_positions: 32, n_embd: 16, n_layer: 1, n_head: 2, eos_token_id: 1 };

function config(out: string, sets: string[] = [], data: Partial<TrainConfig['data']> = {}): TrainConfig {
  return loadConfig(null, sets, {
    model: tinyModel,
    data: { train: trainFile, eval: evalFile, format: 'tokenized', eval_size: 0, skip_invalid: false, drop_last: true, ...data },
    batch_size: 8,
    gradient_accumulation_steps: 2,
    optimizer: 'adamw',
    lr: 3e-3,
    warmup_steps: 2,
    max_length: 16,
    max_prompt_length: 8,
    eval_every: 0,
    output_dir: out,
  });
}
const readJsonl = (f: string) => readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
const trainSteps = (out: string) => readJsonl(path.join(out, 'metrics.jsonl')).filter((m) => 'loss' in m).map((m) => m.step);
const collect = () => {
  const lines: string[] = [];
  return { lines, log: (l: string) => lines.push(l), text: () => lines.join('\n') };
};
/** Trains, stopping (with a checkpoint) after step `at`. */
async function trainUntil(c: TrainConfig, at: number) {
  const abort = new AbortController();
  const r = await train(c, { signal: abort.signal, onStep: (m) => m.step === at && !('eval/loss' in m) && abort.abort() });
  expect(r).toMatchObject({ stopped: true, steps: at });
  return r;
}
const runCli = (args: string[]) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
const lockFile = (out: string) => path.join(out, '.lock');

describe('resume refuses a changed config unless each change is allowed', () => {
  it('names every changed key (also inside an inline model), changes nothing, and releases the lock', async () => {
    const out = path.join(dir, 'changed');
    const base = ['max_steps=4', 'save_every=2'];
    await trainUntil(config(out, base), 2);
    expect(existsSync(lockFile(out))).toBe(false); // released after an abort
    const savedConfig = readFileSync(path.join(out, 'config.json'), 'utf8');
    const savedMetrics = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8');
    const changed = config(out, [...base, 'loss.name=dpo', 'batch_size=16', 'seed=3', 'lr=1e-3', 'model.n_embd=32', 'optimizer=sgd']);
    const err = await train(changed, { resume: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RangeError);
    expect(err).toMatchObject({ code: 'ERR_TDPO_CONFIG' });
    const message = (err as Error).message;
    for (const key of ['loss.name', 'batch_size', 'seed', 'lr', 'model.n_embd', 'optimizer']) expect(message).toContain(key);
    expect(message).toContain('--allow-change');
    expect(message).not.toContain('\n');
    expect(readFileSync(path.join(out, 'config.json'), 'utf8')).toBe(savedConfig);
    expect(readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')).toBe(savedMetrics);
    expect(existsSync(lockFile(out))).toBe(false); // released after an error

    // A misspelt allowed key is refused with a suggestion rather than ignored.
    await expect(train(config(out, base), { resume: true, allowChange: ['max_step'] })).rejects.toMatchObject({
      code: 'ERR_TDPO_CONFIG',
      message: expect.stringContaining("did you mean 'max_steps'"),
    });
    // threads cannot change the run; an allowed max_steps change is taken and recorded.
    const { log, text } = collect();
    const r = await train(config(out, ['max_steps=5', 'save_every=2', 'threads=2']), { resume: true, allowChange: ['max_steps'], log });
    expect(r.steps).toBe(5);
    expect(text()).toContain('max_steps (4 -> 5)');
    expect(JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'))).toMatchObject({ max_steps: 5, threads: 2 });
    expect(trainSteps(out)).toEqual([1, 2, 3, 4, 5]);
  });

  it('a key missing from the run config.json (an older version) is no change while it takes its default', () => {
    const out = path.join(dir, 'older');
    mkdirSync(out, { recursive: true });
    const c = config(out);
    const { sample_max_new_tokens: _, ...older } = JSON.parse(JSON.stringify(c)) as Record<string, unknown>;
    writeFileSync(path.join(out, 'config.json'), JSON.stringify(older));
    expect(checkResumeConfig(out, c, [], () => {})).toEqual([]);
    expect(() => checkResumeConfig(out, { ...c, sample_max_new_tokens: 5 }, [], () => {})).toThrow('sample_max_new_tokens (undefined -> 5)');
  });

  it('an allowed optimizer change starts the new optimizer fresh instead of loading the old state', async () => {
    const out = path.join(dir, 'optimizer');
    await trainUntil(config(out, ['max_steps=4', 'save_every=2']), 2);
    await expect(train(config(out, ['max_steps=4', 'save_every=2', 'optimizer=sgd']), { resume: true })).rejects.toMatchObject({
      code: 'ERR_TDPO_CONFIG',
      message: expect.stringMatching(/optimizer \("adamw" -> "sgd"\)/),
    });
    const { log, text } = collect();
    const r = await train(config(out, ['max_steps=4', 'save_every=2', 'optimizer=sgd']), { resume: true, allowChange: ['optimizer'], log });
    expect(r.steps).toBe(4);
    expect(text()).toMatch(/sgd starts with fresh state/);
  });

  it('the CLI: one line and exit 2 for a refused change; --allow-change takes comma-separated keys', async () => {
    const out = path.join(dir, 'cli-changed');
    const cfgFile = path.join(dir, 'cli-changed.json');
    writeFileSync(cfgFile, JSON.stringify(config(out, ['max_steps=3', 'save_every=1'])));
    await trainUntil(config(out, ['max_steps=3', 'save_every=1']), 1);
    const refused = await runCli(['train', '--config', cfgFile, '--resume', '--set', 'lr=1e-2', '--set', 'eval_every=1']);
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/^tdpo: --resume: .*lr \(0\.003 -> 0\.01\).*eval_every \(0 -> 1\).*--allow-change lr,eval_every/);
    const noResume = await runCli(['train', '--config', cfgFile, '--allow-change', 'lr']);
    expect(noResume.code).toBe(2);
    const ok = await runCli(['train', '--config', cfgFile, '--resume', '--set', 'lr=1e-2', '--set', 'eval_every=1', '--allow-change', 'lr,eval_every']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ steps: 3, stopped: false });
  });
});

describe('one training per output_dir', () => {
  it('a second training refuses while the first runs; after a kill -9 the stale lock is reported and taken over', async () => {
    const out = path.join(dir, 'locked');
    const cfgFile = path.join(dir, 'locked.json');
    writeFileSync(cfgFile, JSON.stringify(config(out, ['n_epochs=100', 'save_every=2'])));
    const first = spawn(process.execPath, [cli, 'train', '--config', cfgFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    await new Promise<void>((resolve, reject) => {
      first.stderr.on('data', (d) => ((stderr += d), /step 3\//.test(stderr) && resolve()));
      first.on('exit', () => reject(new Error(`the first training ended early: ${stderr}`)));
    });
    // In this process, and from a second process.
    await expect(train(config(out, ['n_epochs=100', 'save_every=2']), { resume: true })).rejects.toMatchObject({
      code: 'ERR_TDPO_LOCKED',
      message: expect.stringContaining(`pid ${first.pid}`),
    });
    const second = await runCli(['train', '--config', cfgFile, '--resume']);
    expect(second.code).toBe(1);
    expect(second.stderr.trim().split('\n')).toHaveLength(1);
    expect(second.stderr).toContain(`pid ${first.pid}`);
    first.kill('SIGKILL');
    await new Promise((resolve) => first.on('exit', resolve));
    expect(JSON.parse(readFileSync(lockFile(out), 'utf8'))).toMatchObject({ pid: first.pid });
    const latest = latestCheckpoint(out)!;
    const resumed = await runCli(['train', '--config', cfgFile, '--resume', '--allow-change', 'max_steps', '--set', `max_steps=${latest.state.step + 1}`]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(new RegExp(`took over a stale lock \\(pid ${first.pid} on .*no longer running\\)`));
    expect(existsSync(lockFile(out))).toBe(false);
    expect(trainSteps(out)).toEqual(Array.from({ length: latest.state.step + 1 }, (_, i) => i + 1));
  });

  it('two trainings in one process: the second refuses', async () => {
    const out = path.join(dir, 'twice');
    const [a, b] = await Promise.allSettled([train(config(out, ['max_steps=2'])), train(config(out, ['max_steps=2']))]);
    expect(a.status).toBe('fulfilled');
    expect(b).toMatchObject({ status: 'rejected', reason: { code: 'ERR_TDPO_LOCKED', message: expect.stringContaining('this process') } });
    expect(trainSteps(out)).toEqual([1, 2]);
  });

  it('a lock of another host is respected; one whose pid is dead or reused is stale', () => {
    const out = path.join(dir, 'lockunit');
    mkdirSync(out, { recursive: true });
    const write = (o: object) => writeFileSync(lockFile(out), JSON.stringify({ started: '2026-01-01T00:00:00Z', token: 'x', procStart: null, ...o }));
    write({ pid: process.pid, hostname: `not-${hostname()}` });
    expect(() => acquireLock(out)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_LOCKED', message: expect.stringContaining(`not-${hostname()}`) }));
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    write({ pid: dead, hostname: hostname() });
    const { log, text } = collect();
    const lock = acquireLock(out, log);
    expect(text()).toContain(`pid ${dead}`);
    expect(JSON.parse(readFileSync(lockFile(out), 'utf8'))).toMatchObject({ pid: process.pid, token: lock.info.token });
    lock.release();
    expect(existsSync(lockFile(out))).toBe(false);
    write({ pid: process.ppid, hostname: hostname(), procStart: '1' }); // a live pid that another process now has
    acquireLock(out).release();
  });
});

describe('resume after the end', () => {
  it('with final/ as the newest checkpoint says the run is complete and changes nothing; a raised max_steps continues from final/', async () => {
    const out = path.join(dir, 'complete');
    await train(config(out, ['max_steps=4', 'save_every=2']));
    const snapshot = () => ({
      files: readdirSync(out).sort(),
      metrics: readFileSync(path.join(out, 'metrics.jsonl'), 'utf8'),
      config: readFileSync(path.join(out, 'config.json'), 'utf8'),
      state: readFileSync(path.join(out, 'final', 'trainer.json'), 'utf8'),
      weights: readFileSync(path.join(out, 'final', 'model.safetensors')),
    });
    const before = snapshot();
    const { log, text } = collect();
    const r = await train(config(out, ['max_steps=4', 'save_every=2']), { resume: true, log });
    expect(r).toMatchObject({ steps: 4, examples: 32, stopped: false, alreadyComplete: true, outputDir: path.join(out, 'final') });
    expect(r.lastMetrics?.step).toBe(4);
    expect(text()).toMatch(/is complete/);
    expect(snapshot()).toEqual(before);

    const more = collect();
    const r2 = await train(config(out, ['max_steps=6', 'save_every=2']), { resume: true, allowChange: ['max_steps'], log: more.log });
    expect(r2).toMatchObject({ steps: 6, alreadyComplete: false });
    expect(more.text()).toContain(`resuming from ${path.join(out, 'final')} (step 4)`);
    expect(trainSteps(out)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(JSON.parse(readFileSync(path.join(out, 'final', 'trainer.json'), 'utf8'))).toMatchObject({ step: 6, examples: 48 });
  });
});

describe('resume repairs what an interrupted run left', () => {
  it('drops a half-written last line of metrics.jsonl and samples.jsonl, cuts both to the checkpoint, removes temporary folders', async () => {
    const out = path.join(dir, 'repair');
    const sets = ['max_steps=6', 'save_every=2', 'eval_every=2', 'samples=2', 'sample_max_new_tokens=2'];
    await trainUntil(config(out, sets), 5);
    // As if killed during step 5's save and in the middle of writing both files.
    rmSync(path.join(out, 'step-5'), { recursive: true });
    appendFileSync(path.join(out, 'metrics.jsonl'), '{"loss":0.69,"rewards/cho');
    appendFileSync(path.join(out, 'samples.jsonl'), '{"step":6,"prompt":[3,');
    mkdirSync(path.join(out, '.step-6.tmp-99999'));
    writeFileSync(path.join(out, '.step-6.tmp-99999', 'model.safetensors'), 'partial');
    mkdirSync(path.join(out, '.final.tmp-99999-3-0a1b2c3d'));
    const { log, text } = collect();
    const r = await train(config(out, sets), { resume: true, log });
    expect(r.steps).toBe(6);
    expect(text()).toMatch(/metrics\.jsonl:\d+: dropped a half-written last line/);
    expect(text()).toMatch(/samples\.jsonl:\d+: dropped a half-written last line/);
    expect(text()).toContain('.step-6.tmp-99999');
    const metrics = readJsonl(path.join(out, 'metrics.jsonl'));
    expect(metrics.filter((m) => 'loss' in m).map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(metrics.filter((m) => 'eval/loss' in m).map((m) => m.step)).toEqual([2, 4, 6]);
    expect(readJsonl(path.join(out, 'samples.jsonl')).map((s) => s.step)).toEqual([2, 2, 4, 4, 6, 6]);
    expect(readdirSync(out).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('an unreadable line before the last is an error naming file:line', () => {
    const f = path.join(dir, 'bad-metrics.jsonl');
    writeFileSync(f, '{"step":1}\nnot json\n{"step":2}\n');
    expect(() => truncateJsonl(f, 2, () => {})).toThrow(expect.objectContaining({ code: 'ERR_TDPO_RESUME', message: expect.stringContaining(`${f}:2:`) }));
  });

  it('a save killed between its two renames is completed with the newest complete copy', () => {
    const out = path.join(dir, 'swap');
    const folder = (name: string, step?: number) => {
      mkdirSync(path.join(out, name), { recursive: true });
      if (step !== undefined) writeFileSync(path.join(out, name, 'trainer.json'), JSON.stringify({ step, examples: step * 8, seed: 0, version: 1 }));
    };
    folder('.final.old-123-1-aa', 4);
    folder('.final.tmp-123-2-bb', 6);
    folder('.step-2.tmp-77'); // incomplete, and step-2 exists
    folder('step-2', 2);
    const { log } = collect();
    recoverCheckpointTemps(out, log);
    expect(JSON.parse(readFileSync(path.join(out, 'final', 'trainer.json'), 'utf8')).step).toBe(6);
    expect(readdirSync(out).sort()).toEqual(['final', 'step-2']);
  });

  it('two saves of one checkpoint in one process do not share a temporary folder', async () => {
    const out = path.join(dir, 'saves');
    const m = await Model.create(tinyModel, { seed: 1 });
    try {
      const state = (step: number) => ({ step, examples: step, seed: 0, version: 1 as const });
      await Promise.all([saveCheckpoint(out, 'final', m, null, state(1)), saveCheckpoint(out, 'final', m, null, state(2))]);
      expect([1, 2]).toContain(JSON.parse(readFileSync(path.join(out, 'final', 'trainer.json'), 'utf8')).step);
      expect(existsSync(path.join(out, 'final', 'model.safetensors'))).toBe(true);
      expect(readdirSync(out)).toEqual(['final']);
    } finally {
      m.dispose();
    }
  });
});

describe('data and config mistakes are named before the first step', () => {
  it('a token id outside the vocabulary: file:line, at load; skip_invalid counts it', async () => {
    const lines = pairLines(24, 3);
    lines[6] = JSON.stringify({ prompt_ids: [2, 3], chosen_ids: [4, 40], rejected_ids: [5] });
    const f = writeLines('oov.jsonl', lines);
    const out = path.join(dir, 'oov');
    await expect(train(config(out, ['max_steps=1'], { train: f }))).rejects.toMatchObject({
      code: 'ERR_TDPO_DATA',
      message: expect.stringContaining(`${f}:7: chosen_ids[1] = 40 is outside the model's vocabulary (vocab_size ${V})`),
    });
    expect(existsSync(path.join(out, 'metrics.jsonl'))).toBe(false);
    expect(existsSync(lockFile(out))).toBe(false);
    const r = await train(config(out, ['max_steps=1'], { train: f, skip_invalid: true }));
    expect(r.skippedLines).toBe(1);
  });

  it('text through a tokenizer whose ids exceed the model: file:line', async () => {
    const f = writeLines('text.jsonl', [JSON.stringify({ prompt: 'Hello there', chosen: ' yes', rejected: ' no' })]);
    await expect(train(config(path.join(dir, 'text'), ['max_steps=1', 'tokenizer=gpt2'], { train: f, eval: null, format: 'pairs' }))).rejects.toMatchObject({
      code: 'ERR_TDPO_DATA',
      message: expect.stringMatching(new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:1: the tokenizer gives id \\d+ in "prompt", outside the model's vocabulary`)),
    });
  });

  it('max_length beyond the model positions names max_length and the position count', async () => {
    await expect(train(config(path.join(dir, 'long'), ['max_length=64']))).rejects.toMatchObject({
      code: 'ERR_TDPO_CONFIG',
      message: expect.stringContaining("max_length (64) exceeds the policy's 32 positions (n_positions"),
    });
  });

  const cfgFile = (name: string, text: string) => {
    const f = path.join(dir, name);
    writeFileSync(f, text);
    return f;
  };

  it('invalid YAML is one line: file:line:col: message', () => {
    const f = cfgFile('bad.yaml', 'model: ./m\ndata: [a\nlr: 1\n');
    expect(() => loadConfig(f)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_CONFIG', message: expect.stringMatching(new RegExp(`^${f.replace(/[.]/g, '\\.')}:\\d+:\\d+: [^\\n]+$`)) }));
  });

  it('refuses __proto__, constructor and prototype anywhere in a key', () => {
    const f = cfgFile('ok.yaml', 'model: ./m\ndata:\n  train: t.jsonl\n');
    for (const set of ['__proto__.lr=1', 'constructor.x=1', 'data.prototype=1', 'loss.__proto__.beta=2']) {
      expect(() => loadConfig(f, [set]), set).toThrow(expect.objectContaining({ code: 'ERR_TDPO_CONFIG', message: expect.stringMatching(/__proto__|constructor|prototype/) }));
    }
    const g = cfgFile('proto.yaml', 'model: ./m\ndata:\n  train: t.jsonl\n__proto__:\n  lr: 1\n');
    expect(() => loadConfig(g)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining('__proto__') }));
  });

  it('prints NaN and Infinity as such', () => {
    const f = cfgFile('ok2.yaml', 'model: ./m\ndata:\n  train: t.jsonl\n');
    expect(() => loadConfig(f, ['lr=.nan'])).toThrow('lr must be a number >= 0, got NaN');
    expect(() => loadConfig(f, ['loss.beta=-.inf'])).toThrow('loss.beta must be a finite number > 0, at least 1e-6 and at most 1e6 (the paper uses 0.1), got -Infinity');
    expect(() => loadConfig(f, ['max_grad_norm=.inf'])).toThrow('got Infinity');
  });

  it('--set model.KEY changes one field of an inline model mapping; on a model path it is an error', () => {
    const f = cfgFile('inline.yaml', 'model:\n  model_type: gpt2\n  vocab_size: 32\n  n_embd: 16\ndata:\n  train: t.jsonl\n');
    expect(loadConfig(f, ['model.n_embd=256']).model).toEqual({ model_type: 'gpt2', vocab_size: 32, n_embd: 256 });
    const g = cfgFile('path.yaml', 'model: ./m\ndata:\n  train: t.jsonl\n');
    expect(() => loadConfig(g, ['model.n_embd=256'])).toThrow(expect.objectContaining({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining('model is "./m", not a mapping') }));
  });
});

describe('a fresh run does not mix with an earlier run in its output_dir', () => {
  const sets = ['max_steps=4', 'save_every=2', 'eval_every=2', 'samples=1', 'sample_max_new_tokens=2'];
  const snapshot = (out: string) => ({
    files: readdirSync(out).sort(),
    ...Object.fromEntries(['metrics.jsonl', 'samples.jsonl', 'config.json'].map((f) => [f, readFileSync(path.join(out, f), 'utf8')])),
    state: readFileSync(path.join(out, 'final', 'trainer.json'), 'utf8'),
  });

  it('is refused before it writes anything, naming the checkpoints found and --resume / --overwrite', async () => {
    const out = path.join(dir, 'used');
    await train(config(out, sets));
    const before = snapshot(out);
    expect(before.files).toEqual(expect.arrayContaining(['step-2', 'final', 'metrics.jsonl', 'samples.jsonl', 'config.json']));
    const err = await train(config(out, ['max_steps=3', 'loss.name=dpo'])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RangeError);
    expect(err).toMatchObject({ code: 'ERR_TDPO_CONFIG' });
    const message = (err as Error).message;
    expect(message).toContain(`${out} holds the checkpoints of an earlier run (step-2/, final/)`);
    expect(message).toMatch(/--resume to continue .*--overwrite to start over/);
    expect(message).not.toContain('\n');
    expect(snapshot(out)).toEqual(before);
    expect(existsSync(lockFile(out))).toBe(false);

    // A complete copy left by an interrupted save is a checkpoint too (resume would restore it).
    const temp = path.join(dir, 'used-temp');
    mkdirSync(path.join(temp, '.final.old-1-1-aa'), { recursive: true });
    writeFileSync(path.join(temp, '.final.old-1-1-aa', 'trainer.json'), JSON.stringify({ step: 4, examples: 32, seed: 0, version: 1 }));
    await expect(train(config(temp, ['max_steps=1']))).rejects.toMatchObject({ code: 'ERR_TDPO_CONFIG', message: expect.stringContaining('(.final.old-1-1-aa/)') });
    expect(readdirSync(temp)).toEqual(['.final.old-1-1-aa']);
  });

  it('--overwrite removes the earlier run (and nothing else) once the models and data load, then trains', async () => {
    const out = path.join(dir, 'overwrite');
    await train(config(out, sets));
    writeFileSync(path.join(out, 'notes.txt'), 'mine');
    mkdirSync(path.join(out, 'mine'));
    writeFileSync(path.join(out, 'mine', 'metrics.jsonl'), 'mine');
    mkdirSync(path.join(out, '.step-6.tmp-123')); // an interrupted save
    writeFileSync(path.join(out, 'metrics.jsonl.tmp-123'), '{"step":1}');

    // It will not remove what the config reads, and a data error leaves the earlier run alone.
    await expect(train(config(out, ['max_steps=3', `model=${path.join(out, 'final')}`]), { overwrite: true })).rejects.toMatchObject({
      code: 'ERR_TDPO_CONFIG',
      message: expect.stringContaining(`--overwrite would remove ${path.join(out, 'final')}, which the config reads as model`),
    });
    await expect(train(config(out, ['max_steps=3', 'batch_size=128']), { overwrite: true })).rejects.toMatchObject({ code: 'ERR_TDPO_DATA' });
    expect(readdirSync(out)).toEqual(expect.arrayContaining(['step-2', 'final', 'samples.jsonl']));

    const { log, text } = collect();
    const r = await train(config(out, ['max_steps=3']), { overwrite: true, log });
    expect(r).toMatchObject({ steps: 3, stopped: false, alreadyComplete: false, outputDir: path.join(out, 'final') });
    expect(text()).toContain(`--overwrite: removed the earlier run in ${out}: final/, step-2/, .step-6.tmp-123/, samples.jsonl, metrics.jsonl, config.json, metrics.jsonl.tmp-123`);
    expect(readdirSync(out).sort()).toEqual(['config.json', 'final', 'metrics.jsonl', 'mine', 'notes.txt']);
    expect(readFileSync(path.join(out, 'notes.txt'), 'utf8')).toBe('mine');
    expect(readFileSync(path.join(out, 'mine', 'metrics.jsonl'), 'utf8')).toBe('mine');
    expect(trainSteps(out)).toEqual([1, 2, 3]);
    expect(JSON.parse(readFileSync(path.join(out, 'final', 'trainer.json'), 'utf8'))).toMatchObject({ step: 3, examples: 24 });
    expect(JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'))).toMatchObject({ max_steps: 3, save_every: 0, samples: 0 });
    // --resume now sees the new run, complete.
    await expect(train(config(out, ['max_steps=3']), { resume: true })).resolves.toMatchObject({ steps: 3, alreadyComplete: true });
  });

  it('the CLI: refused with one line and exit 2; --overwrite with --resume is refused; --overwrite trains', async () => {
    const out = path.join(dir, 'cli-used');
    const cfgFile = path.join(dir, 'cli-used.json');
    writeFileSync(cfgFile, JSON.stringify(config(out, ['max_steps=2', 'save_every=1'])));
    await expect(train(config(out, ['max_steps=1', 'save_every=1']), { resume: true, overwrite: true })).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION' });
    expect(existsSync(out)).toBe(false);
    await trainUntil(config(out, ['max_steps=2', 'save_every=1']), 1);
    const metrics = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8');

    const refused = await runCli(['train', '--config', cfgFile]);
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/^tdpo: .* holds the checkpoints of an earlier run \(step-1\/\): pass --resume .* or --overwrite /);
    const both = await runCli(['train', '--config', cfgFile, '--resume', '--overwrite']);
    expect(both.code).toBe(2);
    expect(both.stderr.trim().split('\n')).toHaveLength(1);
    expect(both.stderr).toContain('--overwrite and --resume exclude each other');
    expect(readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')).toBe(metrics);

    const ok = await runCli(['train', '--config', cfgFile, '--overwrite']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ steps: 2, stopped: false });
    expect(ok.stderr).toContain('--overwrite: removed the earlier run');
    expect(readdirSync(out).sort()).toEqual(['config.json', 'final', 'metrics.jsonl', 'step-1']);
    expect(trainSteps(out)).toEqual([1, 2]);
    const help = await runCli(['train', '--help']);
    expect(help.stdout).toContain('--overwrite');
  });

  it('an output_dir holding only other files is not refused, and they are left alone', async () => {
    const out = path.join(dir, 'others');
    mkdirSync(path.join(out, 'final-notes'), { recursive: true });
    writeFileSync(path.join(out, 'README.txt'), 'mine');
    writeFileSync(path.join(out, 'final-notes', 'a.txt'), 'mine');
    writeFileSync(path.join(out, 'step-1.txt'), 'mine');
    const r = await train(config(out, ['max_steps=2']));
    expect(r).toMatchObject({ steps: 2, stopped: false });
    expect(readdirSync(out).sort()).toEqual(['README.txt', 'config.json', 'final', 'final-notes', 'metrics.jsonl', 'step-1.txt']);
    expect(readFileSync(path.join(out, 'final-notes', 'a.txt'), 'utf8')).toBe('mine');
  });

  it('--resume completes a save interrupted between its renames before it picks where to continue', async () => {
    const out = path.join(dir, 'swapped-final');
    await train(config(out, ['max_steps=4', 'save_every=2']));
    // As if killed after moving final/ aside, before putting the new copy in place.
    const { renameSync } = await import('node:fs');
    renameSync(path.join(out, 'final'), path.join(out, '.final.old-1-1-aa'));
    const { log, text } = collect();
    const r = await train(config(out, ['max_steps=4', 'save_every=2']), { resume: true, log });
    expect(r).toMatchObject({ steps: 4, alreadyComplete: true, outputDir: path.join(out, 'final') });
    expect(text()).toContain('restored');
    expect(trainSteps(out)).toEqual([1, 2, 3, 4]);
  });
});
