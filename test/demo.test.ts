// `tdpo demo --quick` end to end: the report's structure, and every number in it finite.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const out = mkdtempSync(path.join(tmpdir(), 'tdpo-demo-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));
const cli = path.resolve(__dirname, '..', 'bin', 'tdpo.js');

describe('tdpo demo --quick', () => {
  it('writes a complete report with finite numbers, then reuses its stages', () => {
    const t0 = Date.now();
    const r = spawnSync(process.execPath, [cli, 'demo', '--quick', '--out', out], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const first = Date.now() - t0;
    const charts = ['frontier.svg', 'frontier-reverse-kl.svg', 'accuracy.svg', 'kl-chosen-rejected.svg', 'kl-margin.svg'];
    for (const f of ['report.md', 'metrics.json', ...charts]) expect(existsSync(path.join(out, f)), f).toBe(true);
    for (const f of charts) {
      expect(readFileSync(path.join(out, f), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>$/);
    }
    const report = readFileSync(path.join(out, 'report.md'), 'utf8');
    for (const h of ['## Setup', '## Results at the last evaluation', '## Each seed', "## The paper's claims", '## Charts']) expect(report).toContain(h);
    expect(report).toMatch(/- Run: started \d{4}-\d\d-\d\d \d\d:\d\d UTC; [\d.]+ min, from scratch/);
    expect(report).toMatch(/- Machine: .+ cores, .+, libtorch /);
    expect(report).toMatch(/- Reward gap \(best − worst\) over the prompts: \d\.\d–\d\.\d: \d+ \(dropped\), /);
    for (const m of ['DPO', 'TDPO1', 'TDPO2 α=0.5', 'TDPO2 α=1.0']) expect(report).toMatch(new RegExp(`\\| ${m} \\| -?\\d+\\.\\d{3} ± \\d+\\.\\d{3} \\| .* \\| 0\\.\\d{3} ± 0\\.\\d{3} \\|`));
    expect(report).toMatch(/TDPO2 keeps a smaller KL margin than DPO:\*\* (yes|no) — .* in \d of 1 seeds/);
    expect(report).toMatch(/frontier dominates DPO's:\*\* (yes|no|partly) — .* holds in \d of 1/);
    expect(report).toMatch(/Every trained method learns the preference:\*\* (yes|no) — /);
    expect(report).toMatch(/\| 1 \| step 8: KL \d+\.\d{3}, reward -?\d+\.\d{3} ± \d+\.\d{3} \| step \d+: KL .* \| [+−]\d\.\d{3} ± \d\.\d{3} \| (yes|no) \|/);
    expect(report).not.toMatch(/NaN|Infinity/);
    const metrics = JSON.parse(readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    const numbers: number[] = [];
    const walk = (v: unknown) => {
      if (typeof v === 'number') numbers.push(v);
      else if (v && typeof v === 'object') Object.values(v).forEach(walk);
    };
    walk(metrics);
    expect(numbers.length).toBeGreaterThan(100);
    expect(numbers.every(Number.isFinite)).toBe(true);
    expect(metrics.points.length).toBe(4 * 3); // 4 methods x evaluations at steps 0, 8, 16
    // 64 samples (2 for each of 32 prompts): the reward's SE is its spread over √64, not 0.
    for (const p of metrics.points) expect(p.rewardSe > 0 && p.rewardSe < 1, JSON.stringify(p)).toBe(true);
    expect(metrics.pairs.map((x: { seed: number }) => x.seed)).toEqual([1]);
    for (const x of metrics.pairs) expect(x.pairs + x.smallGap + x.empty).toBe(x.prompts);
    // Each point's 64 sample rewards, in VADER's [-1, 1], in their own file; the SE agrees with them.
    const samples = readFileSync(path.join(out, 'sample-rewards.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(samples.map((x) => [x.method, x.seed, x.step])).toEqual(metrics.points.map((p: { method: string; seed: number; step: number }) => [p.method, p.seed, p.step]));
    for (const [i, x] of samples.entries()) {
      expect(x.rewards).toHaveLength(64);
      expect(x.rewards.every((v: number) => v >= -1 && v <= 1)).toBe(true);
      expect(x.rewards.reduce((a: number, v: number) => a + v, 0) / 64).toBeCloseTo(metrics.points[i].reward, 12);
    }
    expect(metrics.points.some((p: object) => 'sampleRewards' in p)).toBe(false);
    // The KL margin's error over the held-out pairs, as train() logged it (eval/kl/margin_se): 0
    // for πref, positive once trained.
    for (const p of metrics.points) expect(p.step === 0 ? p.klMarginSe === 0 : p.klMarginSe > 0 && p.klMarginSe < 1, JSON.stringify(p)).toBe(true);
    expect(report).toMatch(/\| DPO \| 1 \| .* \| \d\.\d{3} ± \d\.\d{3} \|\n/);
    expect(metrics.verdicts).toHaveLength(3);
    // The secondary analysis, beside the verdicts: the frontier rule on the reverse KL, its own table.
    expect(metrics.secondary).toHaveLength(1);
    expect(report).toContain('## A secondary analysis: the frontier on the reverse KL');
    expect(report).toMatch(/on the reverse KL\(πθ ‖ πref\):\*\* (yes|no|partly) — .* holds in \d of 1/);
    // πref against itself: a log-ratio of exactly 0 on every sample; trained, the estimate and its error are positive.
    for (const p of metrics.points) {
      if (p.step === 0) expect([p.sampleReverseKl, p.sampleReverseKlSe], JSON.stringify(p)).toEqual([0, 0]);
      else expect(p.sampleReverseKlSe > 0 && p.sampleReverseKl > 2 * p.sampleReverseKlSe, JSON.stringify(p)).toBe(true);
    }
    expect(r.stdout).toContain('| method | reward ± SE |');
    expect(r.stdout).toContain('Every trained method learns the preference');

    // A rerun reuses πref and the pairs.
    const again = spawnSync(process.execPath, [cli, 'demo', '--quick', '--out', out], { encoding: 'utf8' });
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/\[2\/4\] πref by SFT \(reused\)/);
    expect(again.stderr).toMatch(/\[3\/4\] preference pairs .* \(reused\)/);
    expect(Date.now() - t0 - first).toBeLessThan(first);

    // Other settings: the stages they change are redone, not mixed in. A new training length keeps
    // πref and the pairs (their own settings are the same), and the report says what changed.
    const stage = (f: string) => statSync(path.join(out, 'stages-quick', f)).mtimeMs;
    const before = [stage('pairs-seed1.jsonl'), stage('pairs-stats-seed1.json'), stage('reference/final/model.safetensors')];
    const stale = spawnSync(process.execPath, [cli, 'demo', '--quick', '--set', 'trainSteps=8', '--out', out], { encoding: 'utf8' });
    expect([stage('pairs-seed1.jsonl'), stage('pairs-stats-seed1.json'), stage('reference/final/model.safetensors')]).toEqual(before); // not redone
    expect(stale.status, stale.stderr).toBe(0);
    expect(stale.stderr).toContain('was made with other settings: keeping πref and the pairs');
    expect(stale.stderr).toMatch(/\[2\/4\] πref by SFT \(reused\)/);
    expect(stale.stderr).toMatch(/\[3\/4\] preference pairs .* \(reused\)/);
    expect(stale.stderr).toMatch(/TDPO1, seed 1: step 8\/8/); // trained again, not reused
    const overridden = readFileSync(path.join(out, 'report.md'), 'utf8');
    expect(overridden).toMatch(/min, reusing πref and the pairs from an earlier run/);
    expect(overridden).toContain("- Changed on the command line: trainSteps=8. The other settings are --quick's.");
    expect(report).not.toContain('Changed on the command line');
    const m2 = JSON.parse(readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    expect(m2.run.overrides).toEqual(['trainSteps=8']);
    expect(metrics.run.overrides).toEqual([]);
    expect(m2.settings.trainSteps).toBe(8);
    expect(m2.points.length).toBe(4 * 2); // evaluations at steps 0 and 8
  }, 300_000);
});
