// What produced a run: the machine and the libraries. From-scratch results differ between CPUs
// and BLAS builds (floating-point sums in another order, amplified by training), so a report says
// where its digits came from.
import { readFileSync, realpathSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildInfo, getNumThreads } from '../index.js';

function osName(): string {
  try {
    const m = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'));
    if (m) return m[1];
  } catch {
    // not Linux, or no os-release: the kernel's name will do
  }
  return `${os.type()} ${os.release()}`;
}

/** The BLAS and LAPACK libraries this process has mapped (libtorch loads them), by their real file names. */
export function loadedBlas(): string[] {
  let maps: string;
  try {
    maps = readFileSync('/proc/self/maps', 'utf8');
  } catch {
    return [];
  }
  const files = new Set<string>();
  for (const line of maps.split('\n')) {
    const file = line.slice(line.indexOf('/'));
    if (line.includes('/') && /blas|lapack|mkl/i.test(path.basename(file))) {
      try {
        files.add(path.basename(realpathSync(file)));
      } catch {
        files.add(path.basename(file));
      }
    }
  }
  return [...files].sort();
}

export function machineLine(): string {
  const cpus = os.cpus();
  const blas = loadedBlas();
  return (
    `${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${cpus.length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; ${osName()}; ` +
    `node ${process.version}, libtorch ${buildInfo().torchVersion} (${getNumThreads()} threads), BLAS ${blas.length ? blas.join(' + ') : 'not found in the process map'}`
  );
}
