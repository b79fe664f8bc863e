#!/usr/bin/env node
// Compiles lib/ twice: ESM to dist/esm and CommonJS to dist/cjs (marked by its own package.json),
// so both `import` and `require('tdpo')` work through the exports map.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');

rmSync(path.join(root, 'dist'), { recursive: true, force: true });
for (const [project, out] of [['tsconfig.json', 'esm'], ['tsconfig.cjs.json', 'cjs']]) {
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, project)], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
  const dir = path.join(root, 'dist', out);
  mkdirSync(dir, { recursive: true });
  copyFileSync(path.join(root, 'lib', 'package-root.cjs'), path.join(dir, 'package-root.cjs'));
  copyFileSync(path.join(root, 'lib', 'package-root.d.cts'), path.join(dir, 'package-root.d.cts'));
}
writeFileSync(path.join(root, 'dist', 'cjs', 'package.json'), '{ "type": "commonjs" }\n');
