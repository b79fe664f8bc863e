// `tdpo train --config FILE [--set key=value ...] [--resume]`
import { parseArgs } from 'node:util';
import { loadConfig } from '../config.js';
import { train } from '../train/trainer.js';
import { CliError } from './errors.js';

export const trainHelp = `Usage: tdpo train --config FILE [--set key=value ...] [--resume] [--skip-invalid]

Trains a policy with TDPO2 (default), TDPO1, DPO or SFT on a preference data set. The config is
YAML or JSON; --set overrides any key (dotted for sections: --set loss.name=dpo). Defaults are the
paper's: loss {name: tdpo2, alpha: 0.5, beta: 0.1}, batch_size 64, rmsprop, lr 5e-6, warmup_steps
150, max_grad_norm 10, max_length 512, max_prompt_length 256.

Writes <output_dir>/metrics.jsonl (one JSON object per step), step-N/ checkpoints every save_every
steps and final/ at the end. Ctrl-C (SIGINT) or SIGTERM saves a checkpoint and exits 0; --resume
continues from the newest complete checkpoint.

Options:
  -c, --config FILE     the config file
  -s, --set KEY=VALUE   override a key (repeatable)
      --resume          continue from the newest checkpoint in output_dir
      --skip-invalid    count and skip malformed data lines instead of stopping
  -h, --help            this text
`;

export async function trainCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      set: { type: 'string', short: 's', multiple: true },
      resume: { type: 'boolean', default: false },
      'skip-invalid': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(trainHelp);
    return 0;
  }
  if (!values.config && !(values.set ?? []).length) throw new CliError('train needs --config FILE (see tdpo train --help)');
  const config = loadConfig(values.config ?? null, [...(values.set ?? []), ...(values['skip-invalid'] ? ['data.skip_invalid=true'] : [])]);
  const abort = new AbortController();
  const stop = (sig: string) => {
    if (abort.signal.aborted) return;
    process.stderr.write(`\ntdpo: ${sig}: finishing the current step and writing a checkpoint...\n`);
    abort.abort();
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  const tty = process.stderr.isTTY;
  const result = await train(config, {
    resume: values.resume,
    signal: abort.signal,
    log: (line) => process.stderr.write(tty && line.startsWith('step ') ? `\r${line.padEnd(100)}` : `${tty ? '\n' : ''}${line}\n`),
  });
  if (tty) process.stderr.write('\n');
  process.stdout.write(`${JSON.stringify({ steps: result.steps, examples: result.examples, outputDir: result.outputDir, stopped: result.stopped })}\n`);
  return 0;
}
