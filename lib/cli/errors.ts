// A CLI usage error: printed as one line, exit code 2.
export class CliError extends Error {
  readonly code = 'ERR_TDPO_USAGE';
}

export function positiveInt(text: string, flag: string, min = 1): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) {
    throw new CliError(`${flag} must be an integer >= ${min}, got '${text}'`);
  }
  return n;
}
