// A CLI usage error: printed as one line, exit code 2.
import type { ModelDevice } from '../index.js';

export class CliError extends Error {
  readonly code = 'ERR_TDPO_USAGE';
}

/** A flag's or variable's number: '' is NaN, not Number('') = 0 (greedy sampling, rank 0, silently). */
export const numberOf = (text: string): number => (text.trim() === '' ? NaN : Number(text));

export function positiveInt(text: string, flag: string, min = 1, max?: number): number {
  // Decimal digits only, as torchrun's int() reads RANK: Number() would take '0x1', '1e1' and ' 2 ',
  // and round 9007199254740993 to ...992.
  const n = /^[0-9]+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || (max !== undefined && n > max)) {
    throw new CliError(`${flag} must be an integer ${max === undefined ? `>= ${min}` : `in [${min}, ${max}]`}, got '${text}'`);
  }
  return n;
}

export function oneOf<T extends string>(text: string, allowed: readonly T[], flag: string): T {
  if (!(allowed as readonly string[]).includes(text)) {
    throw new CliError(`${flag} must be ${allowed.slice(0, -1).join(', ')} or ${allowed[allowed.length - 1]}, got '${text}'`);
  }
  return text as T;
}

/** --device: cpu, cuda or cuda:N (whether this build and machine have it is the addon's to say). */
export function deviceFlag(text: string, flag = '--device'): ModelDevice {
  if (!/^(cpu|cuda|cuda:\d{1,3})$/.test(text)) throw new CliError(`${flag} must be cpu, cuda or cuda:N, got '${text}'`);
  return text as ModelDevice;
}
