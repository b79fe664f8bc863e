// The demo's --out folder: one demo at a time (the lock train() takes for its output_dir), and
// nothing in it that the demo did not write, since a run replaces its report files and stages.
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { acquireLock, LOCK_FILE, type RunLock } from '../io/lock.js';
import { CHART_FILES } from './charts.js';
import { firstFew } from './stages.js';

/** The report's files, which every run replaces. */
const REPORT_ENTRIES = ['report.md', 'metrics.json', 'sample-rewards.jsonl', 'vocab.json', ...CHART_FILES];
const STAGE_DIRS = ['stages', 'stages-quick'];
/** Every name the demo writes in --out: the report, its charts, the stages of full and --quick runs. */
const OUT_ENTRIES = new Set<string>([...REPORT_ENTRIES, ...STAGE_DIRS, LOCK_FILE]);
/** The lock's own temporaries (io/lock.ts). */
const LOCK_TEMP = new RegExp(`^${LOCK_FILE.replace('.', '\\.')}\\.(new|stale)-`);

function isDemoMetrics(file: string): boolean {
  try {
    const m = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    return typeof m === 'object' && m !== null && ['run', 'settings', 'summary', 'verdicts', 'points'].every((k) => k in m);
  } catch {
    return false;
  }
}

const outError = (message: string) => Object.assign(new Error(message), { code: 'ERR_TDPO_DEMO_OUT' });

/**
 * Creates `out` if needed and locks it for this run (ERR_TDPO_LOCKED while another demo uses it);
 * ERR_TDPO_DEMO_OUT when it is not a folder or holds files the demo did not write.
 */
export function claimOut(out: string, log: (line: string) => void): RunLock {
  try {
    mkdirSync(out, { recursive: true });
  } catch (err) {
    throw outError(`cannot use ${out} as the output folder: ${(err as Error).message}`);
  }
  if (!statSync(out).isDirectory()) throw outError(`${out} is not a folder; choose another --out`);
  const lock = acquireLock(out, log);
  const problem = othersFiles(out);
  if (problem) {
    lock.release();
    throw outError(`${out} holds ${problem}; choose another --out`);
  }
  return lock;
}

/** What in `out` is not the demo's, described for a message; null when everything is. */
function othersFiles(out: string): string | null {
  const foreign = readdirSync(out).filter((e) => !OUT_ENTRIES.has(e) && !LOCK_TEMP.test(e));
  if (foreign.length) return `files the demo did not write (${firstFew(foreign)}), which a run could overwrite`;
  // Files with the report's names are the demo's where a demo ran: it makes a stages folder
  // (with its settings.json) before it writes any of them, and its metrics.json says so too
  // (which still holds once the stages were deleted to free space). Else they are someone's own.
  const demoRan = STAGE_DIRS.some((d) => existsSync(path.join(out, d, 'settings.json'))) || isDemoMetrics(path.join(out, 'metrics.json'));
  const named = REPORT_ENTRIES.filter((e) => existsSync(path.join(out, e)));
  return named.length && !demoRan ? `${firstFew(named)} but no demo stages: files the demo did not write, which a run would overwrite` : null;
}
