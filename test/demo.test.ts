// `tdpo demo --quick` end to end: the report's structure, and every number in it finite.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
    for (const f of ['report.md', 'metrics.json', 'frontier.svg', 'kl-chosen-rejected.svg', 'kl-margin.svg']) {
      expect(existsSync(path.join(out, f)), f).toBe(true);
    }
    for (const f of ['frontier.svg', 'kl-chosen-rejected.svg', 'kl-margin.svg']) {
      expect(readFileSync(path.join(out, f), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>$/);
    }
    const report = readFileSync(path.join(out, 'report.md'), 'utf8');
    for (const h of ['## Setup', '## Results at the last evaluation', "## The paper's claims", '## Charts']) expect(report).toContain(h);
    for (const m of ['DPO', 'TDPO1', 'TDPO2 α=0.5', 'TDPO2 α=1.0']) expect(report).toContain(`| ${m} |`);
    expect(report).toMatch(/TDPO2 keeps a smaller KL margin than DPO:\*\* (yes|no)/);
    expect(report).toMatch(/frontier dominates DPO's:\*\* (yes|no|partly)/);
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
    expect(r.stdout).toContain('| method | reward |');

    // A rerun reuses πref and the pairs.
    const again = spawnSync(process.execPath, [cli, 'demo', '--quick', '--out', out], { encoding: 'utf8' });
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toContain('(reused)');
    expect(Date.now() - t0 - first).toBeLessThan(first);
  }, 300_000);
});
