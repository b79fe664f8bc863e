// The app (cli/, demo/, bench/) uses the library as a user does: through lib/index.ts only, so the
// public API is proven sufficient by our own app; and the library never reaches up into the app.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const lib = path.resolve(__dirname, '..', 'lib');
const APP = ['cli', 'demo', 'bench'];

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : [],
  );
}

/** Every module a file imports (static imports, re-exports and dynamic import()), resolved under lib/. */
function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+'([^']+)'|import\(\s*'([^']+)'\s*\)/g)].map((m) => m[1] ?? m[2]);
  return specs.filter((s) => s.startsWith('.')).map((s) => path.relative(lib, path.resolve(path.dirname(file), s)).replace(/\.(js|cjs)$/, ''));
}

describe('layers', () => {
  it('cli/, demo/ and bench/ import only lib/index.ts (and the package-root and folder-lock helpers) from the library', () => {
    const bad: string[] = [];
    for (const layer of APP) {
      for (const f of files(path.join(lib, layer))) {
        for (const target of imports(f)) {
          const top = target.split(path.sep)[0];
          // The folder lock is no part of the TDPO API; the demo needs train()'s guarantee for --out.
          if (APP.includes(top) || target === 'index' || target === 'package-root' || target === path.join('io', 'lock')) continue;
          bad.push(`${path.relative(lib, f)} imports ${target}`);
        }
      }
    }
    expect(bad).toEqual([]);
  });

  it('the library imports nothing from the app', () => {
    const bad: string[] = [];
    for (const f of files(lib)) {
      const rel = path.relative(lib, f);
      if (APP.includes(rel.split(path.sep)[0])) continue;
      for (const target of imports(f)) if (APP.includes(target.split(path.sep)[0])) bad.push(`${rel} imports ${target}`);
    }
    expect(bad).toEqual([]);
  });

  it('no import circle anywhere in lib/', () => {
    const graph = new Map(files(lib).map((f) => [path.relative(lib, f).replace(/\.ts$/, ''), imports(f)]));
    const cycles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const stack: string[] = [];
    const visit = (n: string) => {
      state.set(n, 'open');
      stack.push(n);
      for (const m of graph.get(n) ?? []) {
        if (!graph.has(m)) continue;
        if (state.get(m) === 'open') cycles.push([...stack.slice(stack.indexOf(m)), m].join(' -> '));
        else if (!state.has(m)) visit(m);
      }
      stack.pop();
      state.set(n, 'done');
    };
    for (const n of graph.keys()) if (!state.has(n)) visit(n);
    expect(cycles).toEqual([]);
  });

  it('finds the imports it checks (the scan is not vacuous)', () => {
    expect(imports(path.join(lib, 'cli', 'demo.ts'))).toContain(path.join('demo', 'stages'));
    expect(imports(path.join(lib, 'demo', 'stages.ts'))).toContain('index');
    expect(imports(path.join(lib, 'train', 'trainer.ts'))).toContain(path.join('train', 'data'));
  });
});
