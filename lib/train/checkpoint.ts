// Checkpoints: <output_dir>/step-N/ holds the policy as a Hugging Face folder, the optimizer state
// and the trainer state. Each is written into a temporary folder that is renamed into place, so a
// crash (even kill -9) never leaves a half-written step-N behind; the temporary folders of a save
// that was killed are cleaned up (or, for one killed between its two renames, completed) by the
// next run through recoverCheckpointTemps.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
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
    if (!Number.isSafeInteger(s?.step) || !Number.isSafeInteger(s.examples)) throw new Error('no step/examples counts');
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
