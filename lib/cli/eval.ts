// `tdpo eval --config FILE [--set k=v ...] [--model DIR]`: the eval metrics of a policy (by
// default the run's final/ policy) against its reference, without training.
import { parseArgs } from 'node:util';
import path from 'node:path';
import { evaluate, loadConfig } from '../index.js';
import { CliError } from './errors.js';

export const evalHelp = `Usage: tdpo eval --config FILE [--set key=value ...] [--model DIR]

Computes the eval metrics (loss, rewards/*, kl/*, logps/*) of a policy over data.eval (or the
held-out split of data.train) with the config's loss, against its reference, and prints them as
JSON. --model defaults to <output_dir>/final.
`;

export async function evalCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      set: { type: 'string', short: 's', multiple: true },
      model: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(evalHelp);
    return 0;
  }
  if (!values.config) throw new CliError('eval needs --config FILE (see tdpo eval --help)');
  const config = loadConfig(values.config, values.set ?? []);
  const metrics = await evaluate(config, values.model ?? path.join(config.output_dir, 'final'));
  process.stdout.write(`${JSON.stringify(metrics)}\n`);
  return 0;
}
