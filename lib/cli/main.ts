// `tdpo <command>`: dispatch only; each command lives in its own file.
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
  bench       fused vs reference TDPO loss: time, bandwidth and peak memory (--model: model runner)
  version     print the package, libtorch and Node versions

Run 'tdpo <command> --help' for a command's options.
`;

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'bench': {
        const { benchCommand } = await import('./bench.js');
        return await benchCommand(rest);
      }
      case 'train': {
        const { trainCommand } = await import('./train.js');
        return await trainCommand(rest);
      }
      case 'demo': {
        const { demoCommand } = await import('./demo.js');
        return await demoCommand(rest);
      }
      case 'eval': {
        const { evalCommand } = await import('./eval.js');
        return await evalCommand(rest);
      }
      case 'generate': {
        const { generateCommand } = await import('./generate.js');
        return await generateCommand(rest);
      }
      case 'version':
      case '--version': {
        const require = createRequire(path.join(packageRoot, 'package.json'));
        const { version } = require('./package.json') as { version: string };
        const { buildInfo } = await import('../runtime.js');
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
