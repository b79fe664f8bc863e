#!/usr/bin/env node
// Regenerates prebuilds/<platform>-<arch>/tdpo.node (Node-API, stripped) with prebuildify through
// the cmake-js shim, and records beside it the digest of the native sources it was built from.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { nativeSources, recordPath, root } from './native-sources.js';

const prebuildify = path.join(root, 'node_modules', 'prebuildify', 'bin.js');
const shim = path.join(root, 'scripts', 'cmake-js-shim.js');
const r = spawnSync(process.execPath, [prebuildify, '--napi', '--strip', `--node-gyp=${shim}`], {
  stdio: 'inherit',
  cwd: root,
});
if (r.status !== 0) process.exit(r.status ?? 1);

const { torchVersion } = JSON.parse(
  spawnSync(process.execPath, ['-p', `JSON.stringify(require(${JSON.stringify(path.join(path.dirname(recordPath), 'tdpo.node'))}).buildInfo())`], {
    encoding: 'utf8',
  }).stdout,
);
const { files, digest } = nativeSources();
writeFileSync(
  recordPath,
  `${JSON.stringify({ digest, torchVersion, node: process.version, files }, null, 2)}\n`,
);
console.log(`prebuild: ${path.relative(root, recordPath)} digest ${digest.slice(0, 12)} (libtorch ${torchVersion})`);
