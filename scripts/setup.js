#!/usr/bin/env node
// Everything `npm start` and `npm test` need on a fresh Debian 12 machine, idempotent and quick
// when already done (~1 s):
//   1. system packages (libtorch, OpenBLAS) through apt when missing; when not root, print the
//      exact command instead;
//   2. `npm ci` when node_modules is missing or older than package-lock.json;
//   3. the TypeScript build (dist/) when any lib/ file is newer;
//   4. a native build only when no binary loads (the committed prebuild normally does).
// Uses nothing outside Node's standard library: it runs before node_modules exists.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const quiet = process.argv.includes('--quiet');
const log = (msg) => quiet || console.error(`setup: ${msg}`);

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...opts });
  if (r.status !== 0) {
    console.error(`setup: '${cmd} ${args.join(' ')}' failed (${r.status ?? r.signal})`);
    process.exit(r.status || 1);
  }
}

// 1. System packages. The prebuilt binary links Debian's libtorch 1.13; OpenBLAS keeps libtorch's
// matmul off the reference BLAS (~30x slower). libgloo-dev is for building only: its headers let
// the addon compile c10d's ProcessGroupGloo (distributed training); the Gloo code it runs is inside
// libtorch. A user libtorch (TDPO_TORCH_DIR) skips the apt step.
const SYSTEM_PACKAGES = ['libtorch-dev', 'libopenblas0-pthread', 'libgloo-dev'];
function missingPackages() {
  return SYSTEM_PACKAGES.filter((p) => {
    const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' });
    return r.status !== 0 || !r.stdout.includes('install ok installed');
  });
}
if (!process.env.TDPO_TORCH_DIR && existsSync('/usr/bin/dpkg-query')) {
  const missing = missingPackages();
  if (missing.length > 0) {
    const cmd = `apt-get update && apt-get install -y --no-install-recommends ${missing.join(' ')}`;
    if (process.getuid?.() !== 0) {
      console.error(`setup: missing system packages: ${missing.join(', ')}. Install them with:\n  sudo sh -c '${cmd}'`);
      process.exit(1);
    }
    log(`installing ${missing.join(' ')} (apt)`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    run('apt-get', ['update', '-qq'], { env });
    run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { env });
  }
}

// 2. npm dependencies.
const lock = path.join(root, 'package-lock.json');
const installed = path.join(root, 'node_modules', '.package-lock.json');
if (!existsSync(installed) || statSync(installed).mtimeMs < statSync(lock).mtimeMs) {
  log('npm ci');
  run('npm', ['ci', '--no-audit', '--no-fund']);
}

// 3. TypeScript.
function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}
const distEntry = path.join(root, 'dist', 'esm', 'index.js');
const built = existsSync(distEntry) && existsSync(path.join(root, 'dist', 'cjs', 'index.js'));
if (!built || statSync(distEntry).mtimeMs < Math.max(newest(path.join(root, 'lib')), statSync(path.join(root, 'package.json')).mtimeMs)) {
  log('compiling TypeScript (dist/)');
  run(process.execPath, [path.join(root, 'scripts', 'build-ts.js')]);
}

// 4. The native addon: build only when none loads.
const probe = spawnSync(process.execPath, ['-e', `require('node-gyp-build')(${JSON.stringify(root)})`], {
  cwd: root,
  encoding: 'utf8',
});
if (probe.status !== 0) {
  log(`no native binary loads (${(probe.stderr.split('\n').find((l) => l.includes('Error')) ?? '').trim()}); building it`);
  run(process.execPath, [path.join(root, 'scripts', 'build-native.js')]);
}
