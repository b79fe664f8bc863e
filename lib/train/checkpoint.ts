// Checkpoints: <output_dir>/step-N/ holds the policy as a Hugging Face folder, the optimizer state
// and the trainer state. Each is written into a temporary folder that is renamed into place, so a
// crash (even kill -9) never leaves a half-written step-N behind; the temporary folders of a save
// that was killed are cleaned up (or, for one killed between its two renames, completed) by the
// next run through recoverCheckpointTemps. A fresh run refuses an output_dir holding an earlier
// run's checkpoints (earlierCheckpoints), unless told to remove that run first (removeEarlierRun).
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { codedError } from '../errors.js';
import type { Model } from '../model.js';
import type { TrainStep } from './train-step.js';

export interface TrainerState {
  /** Optimizer updates done. */
  step: number;
  /** Training pairs consumed. */
  examples: number;
  /** The data order is shuffled(seed + epoch); the loop resumes at this step of the plan. */
  seed: number;
  version: 1;
}

export interface Checkpoint {
  dir: string;
  state: TrainerState;
}

// Unique per call, also within one process (two saves of one name must not share a folder).
let saves = 0;
const tempSuffix = () => `${process.pid}-${++saves}-${randomBytes(4).toString('hex')}`;
/** `.<name>.tmp-<suffix>` (being written) and `.<name>.old-<suffix>` (the copy being replaced). */
const TEMP = /^\.(final|step-\d+)\.(tmp|old)-[0-9A-Za-z-]+$/;
const CHECKPOINT = /^(final|step-\d+)$/;
/** The files a run writes besides its checkpoints, and their temporaries (resume.ts writeFileAtomic). */
const RUN_FILES = ['samples.jsonl', 'metrics.jsonl', 'config.json'];
const RUN_FILE_TEMP = /^(config\.json|metrics\.jsonl|samples\.jsonl)\.tmp-\d+$/;

export async function saveCheckpoint(dir: string, name: string, policy: Model, step: TrainStep | null, state: TrainerState): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const final = path.join(dir, name);
  const suffix = tempSuffix();
  const tmp = path.join(dir, `.${name}.tmp-${suffix}`);
  try {
    await policy.save(tmp);
    if (step) await step.saveOptimizer(path.join(tmp, 'optimizer.pt'));
    writeFileSync(path.join(tmp, 'trainer.json'), `${JSON.stringify(state, null, 2)}\n`);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  if (existsSync(final)) {
    const old = path.join(dir, `.${name}.old-${suffix}`);
    renameSync(final, old);
    renameSync(tmp, final);
    rmSync(old, { recursive: true, force: true });
  } else {
    renameSync(tmp, final);
  }
  return final;
}

function readState(file: string): TrainerState {
  try {
    const s = JSON.parse(readFileSync(file, 'utf8')) as TrainerState;
    if (!Number.isSafeInteger(s?.step) || !Number.isSafeInteger(s.examples) || s.step < 0 || s.examples < 0) throw new Error('no step/examples counts >= 0');
    return s;
  } catch (err) {
    throw codedError('Error', 'ERR_TDPO_RESUME', `${file}: unreadable trainer state (${(err as Error).message.split('\n')[0]}); delete that checkpoint folder to resume from an earlier one`);
  }
}

/** The newest complete step-N folder, or null. */
export function latestCheckpoint(dir: string): Checkpoint | null {
  if (!existsSync(dir)) return null;
  let best: Checkpoint | null = null;
  for (const name of readdirSync(dir)) {
    if (!/^step-\d+$/.test(name)) continue;
    const file = path.join(dir, name, 'trainer.json');
    if (!existsSync(file)) continue;
    const state = readState(file);
    if (!best || state.step > best.state.step) best = { dir: path.join(dir, name), state };
  }
  return best;
}

/** The run's final/ checkpoint, or null. */
export function finalCheckpoint(dir: string): Checkpoint | null {
  const file = path.join(dir, 'final', 'trainer.json');
  return existsSync(file) ? { dir: path.join(dir, 'final'), state: readState(file) } : null;
}

/** Where --resume continues: the newest of step-N and final/ (final/ on a tie), or null. */
export function resumePoint(dir: string): (Checkpoint & { final: boolean }) | null {
  const step = latestCheckpoint(dir);
  const fin = finalCheckpoint(dir);
  if (fin && (!step || fin.state.step >= step.state.step)) return { ...fin, final: true };
  return step ? { ...step, final: false } : null;
}

/**
 * Cleans up after saves that were killed: a save killed between its two renames (the checkpoint
 * missing, its old copy and/or its complete new one left) is completed with the newest complete
 * copy; every other temporary checkpoint folder is removed. Call only while holding the lock.
 */
export function recoverCheckpointTemps(dir: string, log: (line: string) => void): void {
  if (!existsSync(dir)) return;
  const groups = new Map<string, string[]>();
  for (const entry of readdirSync(dir)) {
    const m = TEMP.exec(entry);
    if (m) groups.set(m[1], [...(groups.get(m[1]) ?? []), entry]);
  }
  for (const [name, temps] of groups) {
    const target = path.join(dir, name);
    if (!existsSync(target)) {
      // Complete copies (trainer.json is written last), newest step first.
      const complete = temps
        .filter((t) => existsSync(path.join(dir, t, 'trainer.json')))
        .map((t) => {
          try {
            return { t, step: readState(path.join(dir, t, 'trainer.json')).step };
          } catch {
            return null;
          }
        })
        .filter((x): x is { t: string; step: number } => x !== null)
        .sort((a, b) => b.step - a.step);
      if (complete.length) {
        renameSync(path.join(dir, complete[0].t), target);
        log(`restored ${target} from ${complete[0].t}, left by a save that was interrupted`);
        temps.splice(temps.indexOf(complete[0].t), 1);
      }
    }
    for (const t of temps) {
      rmSync(path.join(dir, t), { recursive: true, force: true });
      log(`removed ${path.join(dir, t)}, the temporary folder of an interrupted save`);
    }
  }
}

const isDir = (p: string) => statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;
/** final/ after every step-N/, step-N/ by N, temporaries last. */
const order = (name: string) => {
  const m = /^\.?(final|step-(\d+))/.exec(name);
  return [name.startsWith('.') ? 2 : 0, m?.[1] === 'final' ? Infinity : Number(m?.[2] ?? 0)] as const;
};
const byOrder = (a: string, b: string) => {
  const [x, y] = [order(a), order(b)];
  return x[0] - y[0] || x[1] - y[1] || (a < b ? -1 : a > b ? 1 : 0);
};

/**
 * The checkpoints of an earlier run in `dir`, as folder names: step-N/ and final/, and the complete
 * copies an interrupted save left (recoverCheckpointTemps would restore those). Empty when none.
 */
export function earlierCheckpoints(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => {
      const p = path.join(dir, name);
      if (CHECKPOINT.test(name)) return isDir(p);
      return TEMP.test(name) && isDir(p) && existsSync(path.join(p, 'trainer.json'));
    })
    .sort(byOrder);
}

/** config.json as train() writes it ('run'), another JSON object ('other', a model's), or 'unreadable'. */
function configKind(file: string): 'run' | 'other' | 'unreadable' {
  let c: unknown;
  try {
    c = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return 'unreadable';
  }
  const o = c as Record<string, unknown>;
  return typeof c === 'object' && c !== null && 'output_dir' in o && 'loss' in o && 'data' in o ? 'run' : 'other';
}

/**
 * What in `dir` has a name a run writes (config.json, metrics.jsonl, samples.jsonl, final/,
 * step-N/) but is not a run's: a model's config.json, a file named final, run files beside
 * neither a run config nor a checkpoint. A run would overwrite or delete them, so it refuses to
 * start. (A run whose config.json was lost or damaged still has its checkpoints: resume.ts
 * reports on that config.)
 */
export function foreignRunEntries(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const names = readdirSync(dir);
  const config = path.join(dir, 'config.json');
  const kind = names.includes('config.json') && statSync(config).isFile() ? configKind(config) : null;
  const runLeftHere = kind === 'run' || earlierCheckpoints(dir).length > 0;
  const out: string[] = [];
  for (const n of names) {
    const p = path.join(dir, n);
    if (CHECKPOINT.test(n) && !isDir(p)) out.push(`${n} (not a checkpoint folder)`);
    else if (n === 'config.json' && (kind === null || kind === 'other' || !runLeftHere)) out.push('config.json (not a tdpo training config: a model folder?)');
    else if ((n === 'metrics.jsonl' || n === 'samples.jsonl') && !(runLeftHere && statSync(p).isFile())) out.push(`${n} (no training run beside it)`);
  }
  return out;
}

/** Everything of a run in `dir` that removeEarlierRun removes, in the order it does. */
export function earlierRunEntries(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const names = readdirSync(dir);
  const folders = names.filter((n) => (CHECKPOINT.test(n) || TEMP.test(n)) && isDir(path.join(dir, n))).sort(byOrder);
  // final/ first, then step-N/ newest first, then the run's files: a removal cut short leaves the
  // earlier run as it stood at an earlier checkpoint (which --resume continues as that run), never
  // one that reads as complete.
  const checkpoints = [...folders.filter((n) => n === 'final'), ...folders.filter((n) => /^step-/.test(n)).reverse(), ...folders.filter((n) => n.startsWith('.'))];
  const files = [...RUN_FILES.filter((n) => names.includes(n)), ...names.filter((n) => RUN_FILE_TEMP.test(n)).sort()];
  return [...checkpoints, ...files];
}

/**
 * Removes an earlier run from `dir`: its step-N/ and final/ checkpoints, the temporary folders of
 * its saves, metrics.jsonl, samples.jsonl and config.json (and their temporaries); nothing else.
 * Each checkpoint folder loses its trainer.json first, so that one whose removal is cut short is
 * no checkpoint to --resume. Returns the names removed. Call only while holding the lock.
 */
export function removeEarlierRun(dir: string): string[] {
  const entries = earlierRunEntries(dir);
  for (const name of entries) {
    const p = path.join(dir, name);
    // lstat: a symlink is removed as a link, nothing where it points.
    if (lstatSync(p, { throwIfNoEntry: false })?.isDirectory()) rmSync(path.join(p, 'trainer.json'), { force: true });
    rmSync(p, { recursive: true, force: true });
  }
  return entries;
}
