// Loads the native addon (prebuilt or locally built) once, at import, and turns a failed load into
// an error that says what is missing and the command that fixes it.
import { createRequire } from 'node:module';
import path from 'node:path';
import packageRoot from './package-root.cjs';
import type { NativeAddon } from './native-types.js';

export type * from './native-types.js';

const APT_FIX = 'sudo apt-get install -y libtorch-dev libopenblas0-pthread';

/** Why the binary did not load, and what to run; exported for tests. */
export function explainLoadFailure(err: unknown): Error {
  const message = err instanceof Error ? err.message : String(err);
  let advice: string;
  const missingLib = /(lib[\w.+-]+\.so[\w.]*): cannot open shared object file/.exec(message);
  if (missingLib) {
    const lib = missingLib[1];
    advice = /torch|c10/.test(lib)
      ? `libtorch is not installed (${lib} was not found). On Debian 12: ${APT_FIX}\n` +
        `To use your own libtorch (e.g. a CUDA build of PyTorch 2.x), rebuild against it: ` +
        `TDPO_TORCH_DIR=/path/to/libtorch/share/cmake/Torch npm rebuild tdpo`
      : `the shared library ${lib} is missing. On Debian 12: ${APT_FIX}`;
  } else if (/undefined symbol|version `[^']+' not found/.test(message)) {
    advice =
      'the installed libtorch is not the one this binary was built against. Rebuild it from ' +
      'source against your libtorch: npm rebuild tdpo (set TDPO_TORCH_DIR for a custom libtorch)';
  } else if (/No native build was found/.test(message)) {
    advice =
      `no prebuilt binary fits ${process.platform}-${process.arch} and none was built. Build it ` +
      `(needs cmake, g++ and libtorch): ${APT_FIX} cmake g++ && npm rebuild tdpo`;
  } else {
    advice = `rebuild it from source: ${APT_FIX} cmake g++ && npm rebuild tdpo`;
  }
  const out = new Error(`tdpo: the native addon could not be loaded: ${advice}\n(${message})`, {
    cause: err,
  });
  (out as Error & { code: string }).code = 'ERR_TDPO_LOAD';
  return out;
}

function load(): NativeAddon {
  const require = createRequire(path.join(packageRoot, 'package.json'));
  try {
    const nodeGypBuild = require('node-gyp-build') as (dir: string) => NativeAddon;
    return nodeGypBuild(packageRoot);
  } catch (err) {
    throw explainLoadFailure(err);
  }
}

export const native: NativeAddon = load();
