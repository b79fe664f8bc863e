// The digest of the native sources a binary is built from: binding/, src/ and CMakeLists.txt.
// prebuild.js records it beside the prebuilt binary; setup.js and a test compare it with the tree.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const recordPath = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'tdpo.sources.json');

function walk(rel) {
  const abs = path.join(root, rel);
  if (statSync(abs).isFile()) return [rel];
  return readdirSync(abs)
    .sort()
    .flatMap((name) => walk(path.join(rel, name)));
}

/** { files: { 'src/x.cc': sha256 }, digest } over the native sources, paths sorted. */
export function nativeSources() {
  const files = {};
  for (const rel of ['CMakeLists.txt', 'binding', 'src'].flatMap(walk)) {
    // Line endings normalised so a checkout with autocrlf hashes the same.
    const text = readFileSync(path.join(root, rel), 'utf8').replace(/\r\n/g, '\n');
    files[rel.split(path.sep).join('/')] = createHash('sha256').update(text).digest('hex');
  }
  const digest = createHash('sha256').update(JSON.stringify(files)).digest('hex');
  return { files, digest };
}
