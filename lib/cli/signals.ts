// Ctrl-C twice, as docker compose reads it: the first asks for a clean stop (a
// checkpoint), a second forces one. One Ctrl-C can arrive twice, though: the terminal sends it to
// the whole foreground process group, so a process under a wrapper that passes signals on (a
// shell script's trap, some package runners, our own launcher) gets it from both. Signals that
// close together are taken for one.
import { constants } from 'node:os';

export const REPEAT_WINDOW_MS = 1000;

export type StopKind = 'first' | 'repeat' | 'again';

/**
 * Classifies each stop signal: the first, a repeat of it (within REPEAT_WINDOW_MS of the first)
 * or a second request. `now` is for tests.
 */
export function stopSignals(now: () => number = Date.now): () => StopKind {
  let first: number | null = null;
  return () => {
    const t = now();
    if (first === null) {
      first = t;
      return 'first';
    }
    return t - first < REPEAT_WINDOW_MS ? 'repeat' : 'again';
  };
}

/**
 * Ends this process by `sig` at once, as if no handler had been installed: no checkpoint, no exit
 * hooks. Checkpoints are written to a temporary folder and renamed, and a resume takes over the
 * lock of a process that is gone, so the run stays resumable from its newest complete one.
 * process.exit instead would run exit hooks while libtorch may be mid-step on another thread.
 */
export function dieBy(sig: NodeJS.Signals): never {
  process.removeAllListeners(sig);
  process.kill(process.pid, sig);
  // Reached where the kernel ignores it: as PID 1 of a container (run it with --init) or with the
  // signal blocked. process.exit then waits for a native step in flight to end.
  process.exit(128 + constants.signals[sig]);
}
