#!/usr/bin/env node
// prebuildify calls its --node-gyp command as `rebuild --target=<node version> --devdir=...
// --arch=... --release`. cmake-js would read --target as a CMake target, and needs no devdir (it
// builds against node-api-headers), so both are dropped and the rest goes to cmake-js.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2).filter((a) => !/^--(target|devdir)=/.test(a));
const cmd = args[0] === 'rebuild' ? 'rebuild' : 'compile';
const rest = args.filter((a) => a !== 'rebuild' && a !== '--release');
const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-native.js'), '--command', cmd, ...rest], {
  stdio: 'inherit',
  cwd: root,
});
process.exit(r.status ?? 1);
