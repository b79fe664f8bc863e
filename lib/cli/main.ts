// `tdpo <command>`: dispatch only; each command lives in its own file.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import packageRoot from '../package-root.cjs';
import { CliError } from './errors.js';

const help = `Usage: tdpo <command> [options]

Commands:
  demo        the end-to-end TDPO vs DPO experiment (what npm start runs)
  train       train a policy (TDPO2, TDPO1, DPO, SFT) from a config file
  eval        eval metrics of a trained policy against its reference
  generate    sample continuations from a model folder
  bench       fused vs reference TDPO loss: time, bandwidth and peak memory
              (--model: the model runner, --train: the train step)
  version     print the package, libtorch and Node versions

Run 'tdpo <command> --help' for a command's options.
`;

// Each command's module loads on demand, so `tdpo --help` does not pull in libtorch.
type Command = (argv: string[]) => Promise<number>;
const commands: Record<string, () => Promise<Command>> = {
  demo: async () => {
    demoPackagesPresent();
    return (await import('./demo.js')).demoCommand;
  },
  train: async () => (await import('./train.js')).trainCommand,
  eval: async () => (await import('./eval.js')).evalCommand,
  generate: async () => (await import('./generate.js')).generateCommand,
  bench: async () => (await import('./bench.js')).benchCommand,
};

/**
 * The demo's packages are optional peers, not dependencies: a service that installs tdpo does not
 * get charting and corpus packages it never runs (and vega-lite's Node >= 22 engine warning). In
 * this repository they are dev dependencies, so `npm start` has them.
 */
function demoPackagesPresent(): void {
  const require = createRequire(path.join(packageRoot, 'package.json'));
  const { peerDependencies = {} } = require('./package.json') as { peerDependencies?: Record<string, string> };
  // Looked up as folders: some of these packages' export maps hide package.json from resolve.
  const present = (name: string) => (require.resolve.paths(name) ?? []).some((dir) => existsSync(path.join(dir, name, 'package.json')));
  const missing = Object.entries(peerDependencies).filter(([name]) => !present(name));
  if (missing.length > 0) {
    throw new CliError(
      `the demo needs packages that are not installed with tdpo; install them with: npm install ${missing.map(([n, v]) => `${n}@${v}`).join(' ')}`,
    );
  }
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    const load = command !== undefined && Object.hasOwn(commands, command) ? commands[command] : undefined;
    if (load) return await (await load())(rest);
    switch (command) {
      case 'version':
      case '--version': {
        const require = createRequire(path.join(packageRoot, 'package.json'));
        const { version } = require('./package.json') as { version: string };
        const { buildInfo } = await import('../index.js');
        const info = buildInfo();
        process.stdout.write(
          `tdpo ${version}, libtorch ${info.torchVersion}${info.cuda ? ' (CUDA)' : ''}, node ${process.version}\n`,
        );
        return 0;
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(help);
        return command === undefined ? 2 : 0;
      default:
        throw new CliError(`unknown command '${command}'; run 'tdpo --help'`);
    }
  } catch (err) {
    const e = err as Error & { code?: string };
    process.stderr.write(`tdpo: ${e.message}\n`);
    return e instanceof CliError || e.code?.startsWith('ERR_PARSE_ARGS') || e.code === 'ERR_TDPO_CONFIG' ? 2 : 1;
  }
}
