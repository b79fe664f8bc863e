// The training loop end to end on a tiny random model and a synthetic preference set with a
// learnable rule: official metrics, learning for each objective, checkpoints, exact resume, and
// SIGINT from the CLI.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, train, type TrainConfig } from '../lib/index.js';
import { metricSums, metricsFromSums } from '../lib/train/metrics.js';
import type { MicroStats } from '../lib/train/train-step.js';
import { rng } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-train-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const V = 32;

// Chosen responses use even token ids, rejected ones odd ids; pre-tokenised JSONL.
function writeData(name: string, n: number, seed: number): string {
  const r = rng(seed);
  const tok = (parity: number) => 2 + 2 * Math.floor(r() * 15) + parity;
  const lines = Array.from({ length: n }, () =>
    JSON.stringify({
      prompt_ids: Array.from({ length: 3 }, () => 2 + Math.floor(r() * 30)),
      chosen_ids: Array.from({ length: 4 }, () => tok(0)),
      rejected_ids: Array.from({ length: 4 }, () => tok(1)),
    }),
  );
  const f = path.join(dir, name);
  writeFileSync(f, `${lines.join('\n')}\n`);
  return f;
}
const trainFile = writeData('train.jsonl', 160, 1);
const evalFile = writeData('eval.jsonl', 32, 2);

function config(out: string, sets: string[] = []): TrainConfig {
  return loadConfig(null, sets, {
    model: { model_type: 'gpt2', vocab_size: V, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4, eos_token_id: 1 },
    data: { train: trainFile, eval: evalFile, format: 'tokenized', eval_size: 0, skip_invalid: false, drop_last: true },
    batch_size: 8,
    gradient_accumulation_steps: 2,
    optimizer: 'adamw',
    lr: 3e-3,
    warmup_steps: 2,
    max_length: 16,
    max_prompt_length: 8,
    eval_every: 10,
    output_dir: out,
  });
}
const readMetrics = (out: string) => readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);

describe('train', () => {
  for (const name of ['dpo', 'tdpo1', 'tdpo2']) {
    it(`${name}: official metrics every step; the loss falls and eval reward accuracy rises`, async () => {
      const out = path.join(dir, name);
      const result = await train(config(out, [`loss.name=${name}`]));
      expect(result.steps).toBe(20); // 160 pairs / batch 8, one epoch
      const lines = readMetrics(out);
      const steps = lines.filter((m) => !('eval/loss' in m));
      const evals = lines.filter((m) => 'eval/loss' in m);
      expect(steps).toHaveLength(20);
      expect(Object.keys(steps[0]).sort()).toEqual(
        ['loss', 'rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins', 'kl/chosen', 'kl/rejected', 'kl/margin', 'kl/margin_se', 'logps/chosen', 'logps/rejected', 'entropy/chosen', 'entropy/rejected', 'grad_norm', 'lr', 'examples_per_second', 'step', 'examples'].sort(),
      );
      expect(steps[0].lr).toBeCloseTo(3e-3 / 3, 10); // warm-up: (step + 1) / (warmup + 1)
      expect(steps[5].lr).toBeCloseTo(3e-3, 10);
      expect(steps[19].examples).toBe(160);
      expect(steps[0].loss).toBeCloseTo(Math.log(2), 5);
      expect(steps[19].loss).toBeLessThan(0.6 * steps[0].loss);
      expect(evals).toHaveLength(2);
      expect(evals[1]['eval/rewards/accuracies']).toBeGreaterThanOrEqual(0.9);
      expect(existsSync(path.join(out, 'final', 'model.safetensors'))).toBe(true);
      expect(existsSync(path.join(out, 'final', 'optimizer.pt'))).toBe(true);
    });
  }

  it('sft lowers the NLL', async () => {
    const out = path.join(dir, 'sft');
    await train(config(out, ['loss.name=sft']));
    const steps = readMetrics(out).filter((m) => !('eval/loss' in m));
    expect(steps[19].loss).toBeLessThan(0.8 * steps[0].loss);
  });

  it('a stop asked for before the first step writes no checkpoint, on a fresh run and on a resume', async () => {
    const out = path.join(dir, 'stop-early');
    const stoppedAlready = () => {
      const a = new AbortController();
      a.abort();
      return a.signal;
    };
    const lines: string[] = [];
    const fresh = await train(config(out, ['max_steps=4', 'save_every=2', 'eval_every=0']), { signal: stoppedAlready(), log: (l) => lines.push(l) });
    expect(fresh).toMatchObject({ stopped: true, steps: 0, examples: 0, outputDir: null, lastMetrics: null });
    expect(lines).toContain('stopped before the first step: no checkpoint written');
    expect(readdirSync(out)).toEqual([]); // made for the run's lock, nothing written
    // Stopped at step 2 by onStep (a step was taken: a checkpoint), then resumed already stopped.
    const abort = new AbortController();
    await train(config(out, ['max_steps=4', 'save_every=0', 'eval_every=0']), { signal: abort.signal, onStep: (m) => m.step === 2 && abort.abort() });
    const before = readdirSync(out).sort();
    expect(before).toContain('step-2');
    const resumed = await train(config(out, ['max_steps=4', 'save_every=0', 'eval_every=0']), { resume: true, signal: stoppedAlready(), log: () => {} });
    expect(resumed).toMatchObject({ stopped: true, steps: 2, outputDir: path.join(out, 'step-2') });
    expect(resumed.lastMetrics?.step).toBe(2);
    expect(readdirSync(out).sort()).toEqual(before);
  });

  it('resume after a stop gives the metrics of an uninterrupted run', async () => {
    const whole = path.join(dir, 'whole');
    await train(config(whole, ['max_steps=8', 'save_every=4', 'eval_every=0']));
    const cut = path.join(dir, 'cut');
    const abort = new AbortController();
    const stopped = await train(config(cut, ['max_steps=8', 'save_every=4', 'eval_every=0']), {
      signal: abort.signal,
      onStep: (m) => m.step === 5 && abort.abort(),
    });
    expect(stopped).toMatchObject({ stopped: true, steps: 5 });
    expect(existsSync(path.join(cut, 'step-4'))).toBe(true);
    expect(existsSync(path.join(cut, 'step-5'))).toBe(true);
    await train(config(cut, ['max_steps=8', 'save_every=4', 'eval_every=0']), { resume: true });
    const strip = (ms: Array<Record<string, number>>) => ms.map(({ examples_per_second: _, ...m }) => m);
    expect(strip(readMetrics(cut))).toEqual(strip(readMetrics(whole)));
  });

  it('SIGINT from the CLI writes a checkpoint and exits 0', async () => {
    const out = path.join(dir, 'sigint');
    const cfg = path.join(dir, 'sigint.json');
    writeFileSync(cfg, JSON.stringify({ ...config(out, ['n_epochs=50', 'eval_every=0']) }));
    const child = spawn(process.execPath, [path.resolve(__dirname, '..', 'bin', 'tdpo.js'), 'train', '--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    await new Promise<void>((resolve) => {
      child.stderr.on('data', (d) => {
        stderr += d;
        if (/step 3\//.test(stderr)) resolve();
      });
    });
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, stderr).toBe(0);
    const summary = JSON.parse(stdout.trim());
    expect(summary.stopped).toBe(true);
    expect(existsSync(path.join(out, `step-${summary.steps}`, 'trainer.json'))).toBe(true);
  });

  it('a bad config is one line and exit code 2', async () => {
    const child = spawn(process.execPath, [path.resolve(__dirname, '..', 'bin', 'tdpo.js'), 'train', '--set', 'batch_sise=4'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(2);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(stderr).toContain("did you mean 'batch_size'");
  });
});

describe('train: samples, eval, generate, kill -9, last batch', () => {
  const cli = path.resolve(__dirname, '..', 'bin', 'tdpo.js');
  const runCli = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });

  it('writes samples from policy and reference at each evaluation, and tdpo eval / generate work on the result', async () => {
    const out = path.join(dir, 'samples');
    const cfgFile = path.join(dir, 'samples.json');
    writeFileSync(cfgFile, JSON.stringify(config(out, ['samples=3', 'sample_max_new_tokens=5', 'max_steps=10'])));
    const r = await runCli(['train', '--config', cfgFile]);
    expect(r.code, r.stderr).toBe(0);
    const samples = readFileSync(path.join(out, 'samples.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(samples).toHaveLength(3);
    expect(samples[0]).toMatchObject({ step: 10 });
    expect(samples[0].policy.length).toBeGreaterThan(0);
    expect(samples[0].reference.length).toBeGreaterThan(0);
    const ev = await runCli(['eval', '--config', cfgFile]);
    expect(ev.code, ev.stderr).toBe(0);
    const m = JSON.parse(ev.stdout);
    expect(m.pairs).toBe(32);
    expect(m['eval/rewards/accuracies']).toBeGreaterThan(0.5);
    const gen = await runCli(['generate', '--model', path.join(out, 'final'), '--prompt', 'Hi', '--max-new-tokens', '3', '--temperature', '0']);
    // The tiny model's vocabulary is 32 ids, so GPT-2 text prompts fall outside it: a clear error.
    expect(gen.code).toBe(1);
    expect(gen.stderr).toMatch(/^tdpo: prompts\[0\]\[0\] = \d+ is outside the vocabulary/);
  });

  it('kill -9 loses at most the steps since the last checkpoint, and resume continues', async () => {
    const out = path.join(dir, 'kill9');
    const cfgFile = path.join(dir, 'kill9.json');
    writeFileSync(cfgFile, JSON.stringify(config(out, ['n_epochs=50', 'save_every=2', 'eval_every=0'])));
    const child = spawn(process.execPath, [cli, 'train', '--config', cfgFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    await new Promise<void>((resolve) => child.stderr.on('data', (d) => ((stderr += d), /step 7\//.test(stderr) && resolve())));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('exit', resolve));
    const { latestCheckpoint } = await import('../lib/train/checkpoint.js');
    const latest = latestCheckpoint(out)!;
    expect(latest.state.step).toBeGreaterThanOrEqual(6);
    const r = await runCli(['train', '--config', cfgFile, '--resume', '--allow-change', 'max_steps', '--set', `max_steps=${latest.state.step + 2}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`resuming from ${latest.dir}`);
    const steps = readMetrics(out).map((m) => m.step);
    expect(steps).toEqual(Array.from({ length: latest.state.step + 2 }, (_, i) => i + 1));
  });

  // A step of a few hundred ms, and SIGSTOP / SIGCONT around the second signal, so that it comes
  // while the first is still being served (a tiny model's step and save take a few ms).
  describe('a second Ctrl-C', () => {
    const slow = (out: string) => {
      const r = rng(3);
      const tok = (parity: number) => 2 + 2 * Math.floor(r() * 15) + parity;
      const data = path.join(dir, 'slow.jsonl');
      const line = () => JSON.stringify({ prompt_ids: [3, 4, 5], chosen_ids: Array.from({ length: 24 }, () => tok(0)), rejected_ids: Array.from({ length: 24 }, () => tok(1)) });
      writeFileSync(data, `${Array.from({ length: 64 }, line).join('\n')}\n`);
      const cfg = loadConfig(null, ['n_epochs=50', 'save_every=1', 'eval_every=0'], {
        model: { model_type: 'gpt2', vocab_size: V, n_positions: 32, n_embd: 256, n_layer: 4, n_head: 4, eos_token_id: 1 },
        data: { train: data, format: 'tokenized', eval_size: 0 },
        batch_size: 16,
        max_length: 32,
        max_prompt_length: 8,
        output_dir: out,
      });
      const file = path.join(dir, `${path.basename(out)}.json`);
      writeFileSync(file, JSON.stringify(cfg));
      return file;
    };
    // Starts `tdpo train`, sends SIGINT after step 2, and once it is served, stops the process,
    // waits `gapMs`, sends SIGINT again and lets it go on.
    const twice = async (cfgFile: string, gapMs: number) => {
      const child = spawn(process.execPath, [cli, 'train', '--config', cfgFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      let stdout = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      const seen = (re: RegExp) => new Promise<void>((resolve) => child.stderr.on('data', () => re.test(stderr) && resolve()));
      const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
      await seen(/step 2\//);
      child.kill('SIGINT');
      await seen(/writing a checkpoint/);
      child.kill('SIGSTOP');
      await new Promise((resolve) => setTimeout(resolve, gapMs));
      child.kill('SIGINT');
      child.kill('SIGCONT');
      return { ...(await exit), stderr: () => stderr, stdout: () => stdout };
    };

    it('a second or more after the first stops at once, by the signal; --resume continues from the newest checkpoint', async () => {
      const out = path.join(dir, 'sigint-twice');
      const cfgFile = slow(out);
      const r = await twice(cfgFile, 1100);
      expect(r.signal, r.stderr()).toBe('SIGINT');
      expect(r.stderr()).toContain('SIGINT again: stopping now, without a checkpoint');
      expect(r.stdout()).toBe(''); // no summary: it did not finish
      const { latestCheckpoint } = await import('../lib/train/checkpoint.js');
      const latest = latestCheckpoint(out)!;
      expect(latest.state.step).toBeGreaterThanOrEqual(1); // step 2's save may have been cut short
      const resumed = await runCli(['train', '--config', cfgFile, '--resume', '--allow-change', 'max_steps', '--set', `max_steps=${latest.state.step + 1}`]);
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(resumed.stderr).toContain(`resuming from ${latest.dir}`);
      expect(resumed.stderr).toContain('took over a stale lock'); // the dead process's
    });

    it('within a second of the first it is the same Ctrl-C delivered twice: one checkpoint, exit 0', async () => {
      const out = path.join(dir, 'sigint-repeat');
      const r = await twice(slow(out), 50);
      expect(r.code, r.stderr()).toBe(0);
      const summary = JSON.parse(r.stdout().trim());
      expect(summary.stopped).toBe(true);
      expect(existsSync(path.join(out, `step-${summary.steps}`, 'trainer.json'))).toBe(true);
      expect(r.stderr()).not.toContain('SIGINT again');
      expect(r.stderr().match(/writing a checkpoint/g)).toHaveLength(1);
    });
  });

  it('drop_last = false trains on the smaller last batch too', async () => {
    const out = path.join(dir, 'keeplast');
    const r = await train(config(out, ['batch_size=12', 'gradient_accumulation_steps=1', 'data.drop_last=false', 'eval_every=0']));
    expect(r.steps).toBe(14); // 160 = 13 x 12 + 4
    expect(r.examples).toBe(160);
  });
});

describe('metrics from sums', () => {
  // Two micro-batches of per-pair statistics, as the native step returns them.
  const micro = (chosenKl: number[], rejectedKl: number[]): MicroStats => {
    const f = (xs: number[]) => Float32Array.from(xs);
    const zeros = f(chosenKl.map(() => 0));
    return { loss: 0.5, tokens: 0, chosenRewards: zeros, rejectedRewards: zeros, chosenKl: f(chosenKl), rejectedKl: f(rejectedKl), chosenLogps: zeros, rejectedLogps: zeros, chosenEntropy: zeros, rejectedEntropy: zeros };
  };
  const a = micro([0.5, 1, 2], [1.5, 1, 2.5]);
  const b = micro([0.25], [2.25]);
  it("gives kl/margin_se, the standard error of the pairs' KL difference", () => {
    // d = rejected − chosen: 1, 0, 0.5, 2. Mean 0.875, sample variance 0.72916..., SE √(var / 4).
    const d = [1, 0, 0.5, 2];
    const mean = d.reduce((x, y) => x + y, 0) / 4;
    const variance = d.reduce((x, y) => x + (y - mean) ** 2, 0) / 3;
    const m = metricsFromSums(metricSums([a, b], false), false);
    expect(m['kl/margin']).toBeCloseTo(mean, 6);
    expect(m['kl/margin_se']).toBeCloseTo(Math.sqrt(variance / 4), 6);
    expect(metricsFromSums(metricSums([b], false), false)['kl/margin_se']).toBe(0); // one pair
  });
  it('adds across ranks: the sums of two parts give the metrics of the whole', () => {
    const [x, y] = [metricSums([a], false), metricSums([b], false)];
    const whole = metricsFromSums(metricSums([a, b], false), false);
    const added = metricsFromSums(x.map((v, i) => v + y[i]), false);
    for (const k of Object.keys(whole)) expect(added[k], k).toBeCloseTo(whole[k], 12);
  });
});
