// `tdpo train --config FILE [--set key=value ...] [--resume [--allow-change KEYS] | --overwrite]`
import { parseArgs } from 'node:util';
import { loadConfig, train } from '../index.js';
import { CliError } from './errors.js';

export const trainHelp = `Usage: tdpo train --config FILE [--set key=value ...] [--resume [--allow-change KEYS] | --overwrite] [--skip-invalid]

Trains a policy with TDPO2 (default), TDPO1, DPO or SFT on a preference data set. The config is
YAML or JSON; --set overrides any key (dotted for sections, --set loss.name=dpo, and for one field
of an inline model mapping, --set model.n_embd=256). Defaults are the paper's: loss {name: tdpo2, alpha: 0.5, beta: 0.1}, batch_size 64, rmsprop, lr 5e-6, warmup_steps
150, max_grad_norm 10, max_length 512, max_prompt_length 256.

Writes <output_dir>/metrics.jsonl (one JSON object per step), step-N/ checkpoints every save_every
steps and final/ at the end. Ctrl-C (SIGINT) or SIGTERM saves a checkpoint and exits 0. One
training holds an output_dir at a time (<output_dir>/.lock); a second one stops with the first's
pid, and the lock of a process that is gone (kill -9) is reported and taken over.

An output_dir that holds the checkpoints (step-N/, final/) of an earlier run is refused (exit 2,
naming them) before anything is written: pass --resume to continue that run, or --overwrite to
start over. --overwrite removes the earlier run's step-N/ and final/ folders, the temporary
folders of its saves, metrics.jsonl, samples.jsonl and config.json once the models and data have
loaded, and nothing else. An output_dir without checkpoints is not refused; files of its own there
are left alone.

--resume continues from the newest complete checkpoint, with the config the run was started with
(<output_dir>/config.json): a key that differs stops it (exit 2, naming each key) unless it is
named in --allow-change; threads and output_dir, which do not change what the run computes,
may always differ. A run whose newest checkpoint
is final/ is complete: --resume says so and changes nothing, unless max_steps (or n_epochs) was
raised with --allow-change max_steps, which continues from final/. A half-written last line in
metrics.jsonl or samples.jsonl (an interrupted write) is dropped with a note, lines after the
checkpoint's step are dropped, and temporary folders of an interrupted save are cleaned up. An
allowed optimizer change starts the new optimizer with fresh state.

Options:
  -c, --config FILE         the config file
  -s, --set KEY=VALUE       override a key (repeatable)
      --resume              continue from the newest checkpoint in output_dir
      --allow-change KEYS   with --resume: config keys that may differ from the run's, comma-
                            separated and repeatable (max_steps,eval_every; a section such as loss
                            allows all its keys)
      --overwrite           remove the earlier run in output_dir and start over (not with
                            --resume)
      --skip-invalid        count and skip malformed data lines instead of stopping
  -h, --help                this text
`;

export async function trainCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      set: { type: 'string', short: 's', multiple: true },
      resume: { type: 'boolean', default: false },
      overwrite: { type: 'boolean', default: false },
      'allow-change': { type: 'string', multiple: true },
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
  const allowChange = (values['allow-change'] ?? []).flatMap((v) => v.split(',')).map((k) => k.trim()).filter(Boolean);
  if (values.resume && values.overwrite) {
    throw new CliError('--overwrite and --resume exclude each other: --resume continues the run in output_dir, --overwrite removes it and starts over');
  }
  if (allowChange.length && !values.resume) throw new CliError('--allow-change applies only with --resume');
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
    overwrite: values.overwrite,
    allowChange,
    signal: abort.signal,
    log: (line) => process.stderr.write(tty && line.startsWith('step ') ? `\r${line.padEnd(100)}` : `${tty ? '\n' : ''}${line}\n`),
  });
  if (tty) process.stderr.write('\n');
  process.stdout.write(`${JSON.stringify({ steps: result.steps, examples: result.examples, outputDir: result.outputDir, stopped: result.stopped, ...(result.alreadyComplete ? { alreadyComplete: true } : {}) })}\n`);
  return 0;
}
