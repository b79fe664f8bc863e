// What --resume checks and repairs before it continues a run: the config against the one the run
// wrote (a change that alters the run is refused unless allowed by name), and the run's JSONL
// files cut back to the checkpoint's step, a half-written last line (disk full, power loss, kill)
// dropped with a note.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { checkConfigKey, defaultConfig, showValue, type TrainConfig } from '../config.js';
import { codedError } from '../errors.js';

/**
 * Keys that may change on resume without being allowed: they cannot change what the run computes
 * or writes. `threads` (the machine's cores; at most the last bits of floating-point sums move),
 * `output_dir` (where the run is, e.g. a moved folder).
 */
// How the same step is computed (threads, memory/time trade-offs), not what it computes.
export const FREE_TO_CHANGE: readonly string[] = ['threads', 'output_dir', 'loss.fused_linear', 'loss.chunk_mb', 'gradient_checkpointing', 'attn_implementation'];

export interface ConfigChange {
  /** Dotted: `loss.name`, `model.n_embd`. */
  key: string;
  from: unknown;
  to: unknown;
}

const isMapping = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Every leaf where two configs differ, by dotted key (mappings compared key by key, anything else whole). */
export function configChanges(saved: unknown, current: unknown, key = ''): ConfigChange[] {
  if (isMapping(saved) && isMapping(current)) {
    const keys = [...new Set([...Object.keys(current), ...Object.keys(saved)])];
    return keys.flatMap((k) => configChanges(saved[k], current[k], key ? `${key}.${k}` : k));
  }
  return JSON.stringify(saved) === JSON.stringify(current) ? [] : [{ key, from: saved, to: current }];
}

/** A key the run's config.json lacks (written by a version without it) that now takes its default is no change. */
function newDefault(ch: ConfigChange): boolean {
  if (ch.from !== undefined) return false;
  let v: unknown = defaultConfig;
  for (const k of ch.key.split('.')) v = isMapping(v) && Object.hasOwn(v, k) ? v[k] : undefined;
  return v !== undefined && JSON.stringify(v) === JSON.stringify(ch.to);
}

const covers = (allowed: string, key: string) => key === allowed || key.startsWith(`${allowed}.`);
const showChange = (ch: ConfigChange) => `${ch.key} (${showValue(ch.from, 40)} -> ${showValue(ch.to, 40)})`;

/**
 * Compares `c` with <output_dir>/config.json. Returns the changes, all of them allowed (each named
 * in `allowChange`, or under a named section: `loss` allows `loss.beta`), or throws
 * ERR_TDPO_CONFIG naming every change that is not.
 */
export function checkResumeConfig(outputDir: string, c: TrainConfig, allowChange: readonly string[], log: (line: string) => void): ConfigChange[] {
  for (const k of allowChange) checkConfigKey(k, 'allowChange: ');
  const file = path.join(outputDir, 'config.json');
  if (!existsSync(file)) {
    log(`--resume: ${file} is missing, so the config cannot be compared with the run's`);
    return [];
  }
  let saved: unknown;
  try {
    saved = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw codedError('Error', 'ERR_TDPO_RESUME', `${file}: unreadable (${(err as Error).message.split('\n')[0]}); it holds the run's config, which --resume compares against`);
  }
  const changes = configChanges(saved, JSON.parse(JSON.stringify(c))).filter((ch) => !FREE_TO_CHANGE.some((f) => covers(f, ch.key)) && !newDefault(ch));
  const refused = changes.filter((ch) => !allowChange.some((a) => covers(a, ch.key)));
  if (refused.length) {
    throw codedError(
      'RangeError',
      'ERR_TDPO_CONFIG',
      `--resume: the config differs from the run's (${file}) in ${refused.map(showChange).join(', ')}; to resume with ${refused.length > 1 ? 'these changes' : 'this change'}, pass --allow-change ${refused.map((ch) => ch.key).join(',')} (allowChange in train())`,
    );
  }
  for (const ch of changes) log(`--resume: config change allowed: ${showChange(ch)}`);
  return changes;
}

/** Writes through a temporary file and a rename, so a crash leaves the old or the new file. */
export function writeFileAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

/**
 * Keeps the lines of a JSONL run file (metrics.jsonl, samples.jsonl) up to `lastStep`, so that the
 * resumed run appends each later step once. A half-written last line is dropped with a note; an
 * unreadable line elsewhere is an error naming file:line.
 */
export function truncateJsonl(file: string, lastStep: number, log: (line: string) => void): void {
  if (!existsSync(file)) return;
  const lines = readFileSync(file, 'utf8').split('\n');
  let end = lines.length;
  while (end > 0 && lines[end - 1].trim() === '') end--;
  const kept: string[] = [];
  let later = 0;
  for (let i = 0; i < end; i++) {
    const text = lines[i];
    if (text.trim() === '') continue;
    let step: unknown;
    try {
      step = (JSON.parse(text) as { step?: unknown }).step;
      if (typeof step !== 'number') throw new Error('no "step"');
    } catch (err) {
      if (i === end - 1) {
        log(`${file}:${i + 1}: dropped a half-written last line (${text.length} characters: an interrupted write); kept the ${kept.length + later} lines before it`);
        continue;
      }
      throw codedError('Error', 'ERR_TDPO_RESUME', `${file}:${i + 1}: not a JSON line with a step (${(err as Error).message.split('\n')[0]}); only a half-written last line is repaired: fix or delete the line to resume`);
    }
    if ((step as number) <= lastStep) kept.push(text);
    else later++;
  }
  writeFileAtomic(file, kept.map((l) => `${l}\n`).join(''));
}
