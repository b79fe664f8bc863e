#!/usr/bin/env node
// Builds build/Release/tdpo.node with cmake-js against libtorch (Debian's libtorch-dev by default;
// set TDPO_TORCH_DIR to the folder holding TorchConfig.cmake of another libtorch, e.g. a CUDA build
// of PyTorch 2.x). Used by the install script when no prebuilt binary loads, by setup.js, and by
// prebuildify through cmake-js-shim.js. Other arguments go to cmake-js.
//   --install        as the npm install script: when libtorch is absent, explain and exit 0 (the
//                    import then says the same), instead of failing the whole npm install
//   --command NAME   cmake-js command (default: compile)
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const APT = 'sudo apt-get install -y cmake g++ libtorch-dev libopenblas0-pthread libgloo-dev';

let argv = process.argv.slice(2);
const installMode = argv.includes('--install');
argv = argv.filter((a) => a !== '--install');
let command = 'compile';
const ci = argv.indexOf('--command');
if (ci >= 0) {
  command = argv[ci + 1];
  argv.splice(ci, 2);
}

function torchConfigFound() {
  if (process.env.TDPO_TORCH_DIR || process.env.Torch_DIR || process.env.CMAKE_PREFIX_PATH) return true;
  return ['/usr/lib/x86_64-linux-gnu/cmake/Torch', '/usr/lib/aarch64-linux-gnu/cmake/Torch', '/usr/share/cmake/Torch',
    '/usr/local/share/cmake/Torch'].some((d) => existsSync(path.join(d, 'TorchConfig.cmake')));
}

if (!torchConfigFound()) {
  const msg =
    `tdpo: no prebuilt binary fits and libtorch (TorchConfig.cmake) was not found, so the native addon\n` +
    `was not built. Install it and rebuild:\n  ${APT}\n  npm rebuild tdpo\n` +
    `or use your own libtorch: TDPO_TORCH_DIR=/path/to/share/cmake/Torch npm rebuild tdpo`;
  console.error(msg);
  process.exit(installMode ? 0 : 1);
}

const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const args = [cmakeJs, command, '--directory', root, ...argv];
const torchDir = process.env.TDPO_TORCH_DIR || process.env.Torch_DIR;
if (torchDir) args.push(`--CDTorch_DIR=${torchDir}`);
if (process.env.CMAKE_PREFIX_PATH) args.push(`--CDCMAKE_PREFIX_PATH=${process.env.CMAKE_PREFIX_PATH}`);
const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root });
if (r.status !== 0) {
  console.error(`\ntdpo: the native build failed. It needs cmake, a C++17 compiler and libtorch:\n  ${APT}`);
  process.exit(r.status ?? 1);
}
