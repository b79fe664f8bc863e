// `tdpo bench --service`: the reference HTTP service (examples/service) under load, in a checkout.
// The driver is the example's own load.js (it starts server.js in a child process and drives it
// with autocannon, a dev dependency), so the figures come from the service as users would run it.
// An installed package ships neither the example nor autocannon: then this says so.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import packageRoot from '../package-root.cjs';
import { CliError } from '../cli/errors.js';

export interface ServiceBenchConfig {
  /** Seconds of the mix (ignored with soak). */
  seconds: number;
  /** Seconds of soak (RSS and fds sampled every 10 s); null: a single load run. */
  soak: number | null;
  /** libtorch threads in the service; null: its default (every CPU). */
  threads: number | null;
  json: boolean;
}

/** Runs examples/service/load.js in the foreground; returns its exit code. */
export function runServiceBench(c: ServiceBenchConfig): number {
  const driver = path.join(packageRoot, 'examples', 'service', 'load.js');
  if (!existsSync(driver)) {
    throw new CliError(`tdpo bench --service needs a checkout of tdpo: ${driver} is not here (the package does not ship its examples)`);
  }
  try {
    createRequire(path.join(packageRoot, 'package.json')).resolve('autocannon');
  } catch {
    throw new CliError('tdpo bench --service needs the dev dependency autocannon: run `npm install` in the checkout');
  }
  const args = [driver, ...(c.threads !== null ? ['--threads', String(c.threads)] : []), ...(c.soak !== null ? ['--soak', String(c.soak)] : ['--seconds', String(c.seconds)]), ...(c.json ? ['--json'] : [])];
  const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: packageRoot });
  return r.status ?? 1;
}
