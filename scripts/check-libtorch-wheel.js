#!/usr/bin/env node
// The second build target: the addon built against PyTorch's own libtorch, the CPU wheel that
// `npm test` puts in .venv-interop/ (scripts/interop-python.js), and the native tests run on that
// build, torchrun's among them (test/distributed.test.ts: the wheel's torchrun speaks its own
// libtorch's store protocol, which the prebuild's 1.13 does not). CI runs it after `npm test`
// (.ci/run); `npm run test:libtorch-wheel` runs it by hand.
//
// The build is made in a copy of the package, .libtorch-wheel/ (sources copied with their times,
// so a rerun recompiles only what changed; no prebuilds/, so that only this build can load). The
// wheel ships no Gloo headers and Gloo's must match the Gloo inside libtorch: Debian's libgloo-dev
// headers (2022) serve for this check, which is why this build is not one to ship.
// Without the venv it says why and exits 0; under CI (CI set) that is an error instead.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { cpus } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const copy = path.join(root, '.libtorch-wheel');
const venv = path.join(root, '.venv-interop');
const python = path.join(venv, 'bin', 'python');
const torchrun = path.join(venv, 'bin', 'torchrun');
const say = (msg) => console.error(`libtorch-wheel: ${msg}`);
const ci = !!process.env.CI && process.env.CI !== 'false';

// The tests that reach native code; the others (tokenizers, the demo's parts, the CLI's parsing,
// the package) do not depend on which libtorch the addon links.
const TESTS = [
  'test/loss-golden.test.ts', 'test/loss-errors.test.ts', 'test/loss-async.test.ts', 'test/model.test.ts',
  'test/model-llama.test.ts', 'test/model-generate.test.ts', 'test/train-step.test.ts', 'test/train.test.ts',
  'test/fused-linear.test.ts', 'test/hardening-native.test.ts', 'test/distributed.test.ts', 'test/transformers.test.ts', 'test/attention.test.ts',
];

function giveUp(reason) {
  if (ci) {
    say(`cannot run: ${reason}`);
    process.exit(1);
  }
  say(`skipped: ${reason}`);
  process.exit(0);
}

if (!existsSync(python)) giveUp('no .venv-interop (npm test makes it; TDPO_INTEROP=0 or TDPO_PYTHON skip it)');
const info = spawnSync(python, ['-c', 'import torch; print(torch.__version__); print(torch.utils.cmake_prefix_path)'], { encoding: 'utf8' });
if (info.status !== 0) giveUp(`the venv's torch does not import: ${String(info.stderr).trim().split('\n').pop()}`);
const [torchVersion, prefix] = info.stdout.trim().split('\n');
const torchDir = path.join(prefix, 'Torch');
if (!existsSync(path.join(torchDir, 'TorchConfig.cmake'))) giveUp(`no TorchConfig.cmake in ${torchDir}`);
if (!existsSync('/usr/include/gloo/config.h')) giveUp('no Gloo headers (libgloo-dev; scripts/setup.js installs it)');
if (!existsSync(torchrun)) giveUp(`no torchrun in ${path.dirname(torchrun)}`);

const SKIP = new Set(['.git', 'node_modules', 'build', 'prebuilds', '.venv-interop', '.libtorch-wheel', 'demo-output', '.bench-tmp', '.device', '.device-out']);
mkdirSync(copy, { recursive: true });
// Entry by entry: cpSync refuses to copy a folder into a folder inside it.
for (const entry of readdirSync(root)) {
  if (SKIP.has(entry)) continue;
  cpSync(path.join(root, entry), path.join(copy, entry), {
    recursive: true,
    preserveTimestamps: true,
    filter: (src) => !/^examples\/[^/]+\/(data|out|tokenizer)(\/|$)/.test(path.relative(root, src)),
  });
}
rmSync(path.join(copy, 'node_modules'), { recursive: true, force: true });
symlinkSync(path.join(root, 'node_modules'), path.join(copy, 'node_modules'));

const t0 = Date.now();
say(`building against torch ${torchVersion} (${torchDir}) in ${path.relative(root, copy)}/`);
const env = { ...process.env, TDPO_TORCH_DIR: torchDir };
const build = spawnSync(process.execPath, ['scripts/build-native.js', '--parallel', String(cpus().length), '--CDTDPO_GLOO_INCLUDE=/usr/include'], {
  cwd: copy,
  env,
  encoding: 'utf8',
  maxBuffer: 256 * 1024 * 1024,
});
if (build.status !== 0) {
  console.error(`${build.stdout}${build.stderr}`.trim().split('\n').slice(-40).join('\n'));
  say('the build failed');
  process.exit(1);
}
say(`built in ${((Date.now() - t0) / 1000).toFixed(0)} s`);

const check = spawnSync(process.execPath, ['--input-type=module', '-e', "import { buildInfo } from './dist/esm/index.js'; console.log(JSON.stringify(buildInfo()))"], { cwd: copy, encoding: 'utf8' });
if (check.status !== 0) {
  console.error(check.stderr);
  say('the build does not load');
  process.exit(1);
}
const built = JSON.parse(check.stdout);
say(`loaded: ${check.stdout.trim()}`);
if (!torchVersion.startsWith(built.torchVersion) || !built.distributedBackends.includes('gloo')) {
  say(`expected torch ${torchVersion} with Gloo, got ${built.torchVersion} with [${built.distributedBackends}]`);
  process.exit(1);
}

const t1 = Date.now();
const tests = spawnSync(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', ...TESTS], {
  cwd: copy,
  env: { ...process.env, TDPO_TORCHRUN: torchrun, TDPO_PYTHON: process.env.TDPO_PYTHON ?? python },
  stdio: 'inherit',
});
if (tests.status !== 0) {
  say(`tests failed on the build against torch ${torchVersion}`);
  process.exit(tests.status ?? 1);
}
say(`passed on torch ${torchVersion} (tests ${((Date.now() - t1) / 1000).toFixed(0)} s)`);
