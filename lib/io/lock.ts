// One run per folder (train()'s output_dir, the demo's --out): <dir>/.lock names its holder (pid,
// host, start time, and the process's start tick from /proc, so that a reused pid is not mistaken
// for the holder). It is created atomically (written to a private file, then hard-linked into
// place, which fails when a lock exists), released on every exit from the run and, as a last
// resort, on process exit. A lock whose holder is gone (kill -9, a crash) is stale: the next run
// reports it and takes it over.
import { randomBytes } from 'node:crypto';
import { closeSync, linkSync, openSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { codedError } from '../errors.js';

export interface LockInfo {
  pid: number;
  hostname: string;
  /** ISO time the lock was taken. */
  started: string;
  /** Field 22 of /proc/<pid>/stat (the process's start time in clock ticks), where readable. */
  procStart: string | null;
  /** Tells this lock from another taken by the same process. */
  token: string;
}

export interface RunLock {
  readonly file: string;
  readonly info: LockInfo;
  /** Removes the lock if it is still this one; idempotent. */
  release(): void;
}

export const LOCK_FILE = '.lock';

/** The process's start time and state from /proc/<pid>/stat, or null where unreadable. */
function procStat(pid: number): { start: string; state: string } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields 3 onwards
    return { state: fields[0], start: fields[19] };
  } catch {
    return null;
  }
}

/** 'alive', 'gone' (with why), or 'unknown' for a holder on another host. */
function holderStatus(h: LockInfo): { status: 'alive' } | { status: 'unknown' } | { status: 'gone'; why: string } {
  if (h.hostname !== hostname()) return { status: 'unknown' };
  try {
    process.kill(h.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return { status: 'gone', why: 'no longer running' };
    // EPERM: a process of another user holds that pid; decided below by its start time.
  }
  const now = procStat(h.pid);
  if (now?.state === 'Z') return { status: 'gone', why: 'exited (a zombie)' };
  if (now && h.procStart && now.start !== h.procStart) return { status: 'gone', why: 'no longer running (its pid now belongs to another process)' };
  return { status: 'alive' };
}

function parseLock(text: string): LockInfo | null {
  try {
    const o = JSON.parse(text) as LockInfo;
    return Number.isSafeInteger(o?.pid) && typeof o.hostname === 'string' ? o : null;
  } catch {
    return null;
  }
}

/** Creates `file` holding `text` unless it exists; false when it does. */
function createExclusive(file: string, text: string, token: string): boolean {
  const tmp = `${file}.new-${process.pid}-${token}`;
  writeFileSync(tmp, text);
  try {
    linkSync(tmp, file);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
    // A file system without hard links: O_EXCL, then the content.
    let fd: number;
    try {
      fd = openSync(file, 'wx');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    }
    writeSync(fd, text);
    closeSync(fd);
    return true;
  } finally {
    rmSync(tmp, { force: true });
  }
}

const describe = (h: LockInfo) => `pid ${h.pid} on ${h.hostname}, started ${h.started}`;

/**
 * Takes <dir>/.lock for this process, or throws ERR_TDPO_LOCKED naming the holder. A stale lock
 * (its holder on this host is gone) is reported through `log` and taken over.
 */
export function acquireLock(dir: string, log: (line: string) => void = () => {}): RunLock {
  const file = path.join(dir, LOCK_FILE);
  const info: LockInfo = {
    pid: process.pid,
    hostname: hostname(),
    started: new Date().toISOString(),
    procStart: procStat(process.pid)?.start ?? null,
    token: randomBytes(8).toString('hex'),
  };
  const text = `${JSON.stringify(info)}\n`;
  for (let attempt = 0; attempt < 8; attempt++) {
    if (createExclusive(file, text, info.token)) return holdLock(file, info);
    let seen: string;
    try {
      seen = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // released meanwhile
      throw codedError('Error', 'ERR_TDPO_LOCKED', `${dir}: cannot read the lock ${file} (${(err as Error).message}); if no run uses ${dir}, delete it`);
    }
    const holder = parseLock(seen);
    let why: string;
    if (holder) {
      const s = holderStatus(holder);
      if (s.status === 'alive') {
        const who = holder.pid === process.pid ? `this process (pid ${holder.pid})` : `another run (${describe(holder)})`;
        throw codedError('Error', 'ERR_TDPO_LOCKED', `${dir} is in use by ${who}; wait for it to end or stop it (lock ${file})`);
      }
      if (s.status === 'unknown') {
        throw codedError('Error', 'ERR_TDPO_LOCKED', `${dir} is in use by a run on another host (${describe(holder)}); if it is no longer running, delete ${file}`);
      }
      why = `${describe(holder)}, ${s.why}`;
    } else {
      // Unreadable: a lock being written without hard links, or a damaged file. Give a writer time.
      const st = statSync(file, { throwIfNoEntry: false });
      if (!st) continue; // released meanwhile
      if (Date.now() - st.mtimeMs <= 2000) {
        throw codedError('Error', 'ERR_TDPO_LOCKED', `${dir} is in use: ${file} is being written by another run`);
      }
      why = 'an unreadable lock file';
    }
    // Stale: move it aside atomically; if what moved is not what was judged (another process took
    // the stale lock over in between), put it back and look again.
    const aside = `${file}.stale-${process.pid}-${info.token}`;
    try {
      renameSync(file, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    if (readFileSync(aside, 'utf8') !== seen) {
      try {
        linkSync(aside, file);
      } catch {
        // someone took it meanwhile: the next attempt sees theirs
      }
      rmSync(aside, { force: true });
      continue;
    }
    rmSync(aside, { force: true });
    log(`${dir}: took over a stale lock (${why})`);
  }
  throw codedError('Error', 'ERR_TDPO_LOCKED', `${dir}: could not take ${file}; it kept changing hands`);
}

function holdLock(file: string, info: LockInfo): RunLock {
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    process.off('exit', release);
    try {
      if (parseLock(readFileSync(file, 'utf8'))?.token === info.token) unlinkSync(file);
    } catch {
      // already gone
    }
  };
  process.on('exit', release);
  return { file, info, release };
}
