#!/usr/bin/env node
// The `tdpo` command. The TypeScript sources compile to dist/ (npm run build:ts, or npm start /
// npm test, which build it when stale).
import { existsSync } from 'node:fs';

const entry = new URL('../dist/esm/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('tdpo: dist/ is missing; build it with `npm run build:ts`\n');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
