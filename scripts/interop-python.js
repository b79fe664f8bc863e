#!/usr/bin/env node
// The Python that test/transformers.test.ts checks our saved folders with: a virtual environment in
// .venv-interop/ with torch (CPU), transformers and safetensors, made once by `npm test` (about a
// minute from a local mirror) and reused after. Where pip is configured with a local mirror
// (pip's extra-index-url), the mirror stands in for PyPI, so nothing is fetched from the network.
//
// Without python3 or a reachable package index the interop test is skipped with the reason printed
// here; under CI (CI set) that is an error instead, so CI cannot pass without running it.
// TDPO_PYTHON names another interpreter and skips all of this; TDPO_INTEROP=0 skips it too.
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const venv = path.join(root, '.venv-interop');
const python = path.join(venv, 'bin', 'python');
const ready = path.join(venv, '.ready');
const PACKAGES = ['torch', 'transformers', 'safetensors'];
const log = (msg) => console.error(`setup: ${msg}`);

function giveUp(reason) {
  if (process.env.CI && process.env.CI !== 'false') {
    console.error(`setup: the transformers interop Python could not be made: ${reason}`);
    process.exit(1);
  }
  log(`test/transformers.test.ts will be skipped: ${reason}`);
  process.exit(0);
}

if (process.env.TDPO_PYTHON || process.env.TDPO_INTEROP === '0') process.exit(0);
// Made before and still importing (a python3 upgrade can break a venv): nothing to do.
if (existsSync(ready) && spawnSync(python, ['-c', 'import torch, transformers, safetensors'], { stdio: 'ignore' }).status === 0) process.exit(0);

const sh = (cmd, args, opts = {}) => spawnSync(cmd, args, { encoding: 'utf8', cwd: root, ...opts });
if (sh('python3', ['-c', 'import venv, ensurepip']).status !== 0) giveUp('python3 with venv and ensurepip is not installed');

// A local mirror replaces the default index: pip would otherwise also ask PyPI and, offline, wait
// for its retries (5 min against 47 s measured).
const extra = (sh('python3', ['-m', 'pip', 'config', 'get', 'global.extra-index-url']).stdout ?? '').trim().split(/\s+/).filter(Boolean);
const mirror = extra.find((u) => u.startsWith('file:'));
const indexArgs = mirror ? ['--index-url', mirror, ...extra.filter((u) => u !== mirror).flatMap((u) => ['--extra-index-url', u])] : [];

log(`making .venv-interop (${PACKAGES.join(', ')}${mirror ? `, from ${mirror}` : ''}) for the transformers interop test`);
rmSync(venv, { recursive: true, force: true });
const made = sh('python3', ['-m', 'venv', venv], { stdio: 'inherit' });
if (made.status !== 0) giveUp('python3 -m venv failed');
// pip's output (a mirror's listings warn once per package) is shown only when it fails.
const pip = sh(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--retries', '1', '--timeout', '20', ...indexArgs, ...PACKAGES], {
  timeout: 15 * 60 * 1000,
  maxBuffer: 64 * 1024 * 1024,
});
if (pip.status !== 0) {
  rmSync(venv, { recursive: true, force: true });
  const tail = `${pip.stdout ?? ''}${pip.stderr ?? ''}`.trim().split('\n').filter((l) => !/is ignored: it is neither/.test(l)).slice(-15).join('\n');
  giveUp(`pip install ${PACKAGES.join(' ')} failed (${pip.status ?? pip.signal}):\n${tail}`);
}
const check = sh(python, ['-c', 'import torch, transformers, safetensors; print(torch.__version__, transformers.__version__)']);
if (check.status !== 0) giveUp(`the new environment cannot import them: ${String(check.stderr ?? '').trim().split('\n').pop()}`);
log(`.venv-interop: torch ${check.stdout.trim().replace(' ', ', transformers ')}`);
writeFileSync(ready, `${check.stdout.trim()}\n`);
