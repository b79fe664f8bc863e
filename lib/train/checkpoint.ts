// Checkpoints: <output_dir>/step-N/ holds the policy as a Hugging Face folder, the optimizer state
// and the trainer state. Each is written into a temporary folder that is renamed into place, so a
// crash (even kill -9) never leaves a half-written step-N behind.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
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

export async function saveCheckpoint(dir: string, name: string, policy: Model, step: TrainStep | null, state: TrainerState): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const final = path.join(dir, name);
  const tmp = path.join(dir, `.${name}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  await policy.save(tmp);
  if (step) await step.saveOptimizer(path.join(tmp, 'optimizer.pt'));
  writeFileSync(path.join(tmp, 'trainer.json'), `${JSON.stringify(state, null, 2)}\n`);
  if (existsSync(final)) {
    const old = path.join(dir, `.${name}.old-${process.pid}`);
    renameSync(final, old);
    renameSync(tmp, final);
    rmSync(old, { recursive: true, force: true });
  } else {
    renameSync(tmp, final);
  }
  return final;
}

/** The newest complete step-N folder, or null. */
export function latestCheckpoint(dir: string): { dir: string; state: TrainerState } | null {
  if (!existsSync(dir)) return null;
  let best: { dir: string; state: TrainerState } | null = null;
  for (const name of readdirSync(dir)) {
    if (!/^step-\d+$/.test(name)) continue;
    const file = path.join(dir, name, 'trainer.json');
    if (!existsSync(file)) continue;
    const state = JSON.parse(readFileSync(file, 'utf8')) as TrainerState;
    if (!best || state.step > best.state.step) best = { dir: path.join(dir, name), state };
  }
  return best;
}
