// `tdpo train --config FILE [--set key=value ...] [--resume [--allow-change KEYS] | --overwrite]`
import { parseArgs } from 'node:util';
import { buildInfo, loadConfig, setNumThreads, train } from '../index.js';
import { CliError } from './errors.js';
import { LAUNCH_OPTIONS, launch, watchLauncher, workerFromEnv } from './launch.js';
import { dieBy, stopSignals } from './signals.js';

export const trainHelp = `Usage: tdpo train --config FILE [--set key=value ...] [--resume [--allow-change KEYS] | --overwrite] [--skip-invalid]
                  [--nproc-per-node N [--nnodes M --node-rank R --master-addr HOST --master-port PORT]]

Trains a policy with TDPO2 (default), TDPO1, DPO or SFT on a preference data set. The config is
YAML or JSON; --set overrides any key (dotted for sections, --set loss.name=dpo, and for one field
of an inline model mapping, --set model.n_embd=256). Defaults are the paper's: loss {name: tdpo2, alpha: 0.5, beta: 0.1}, batch_size 64, rmsprop, lr 5e-6, warmup_steps
150, max_grad_norm 10, max_length 512, max_prompt_length 256.

Writes <output_dir>/metrics.jsonl (one JSON object per step), step-N/ checkpoints every save_every
steps and final/ at the end. Ctrl-C (SIGINT) or SIGTERM saves a checkpoint and exits 0; a second
one, a second or more later, stops at once without it (killed by the signal; --resume continues
from the newest complete checkpoint). One
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

Data-parallel training (PyTorch's c10d: TCPStore rendezvous, Gloo allreduce): --nproc-per-node N
starts N workers on this machine (output prefixed [rank R]); on several machines run the same
command on each with --nnodes, --node-rank and the same --master-addr / --master-port (node rank
0's host). batch_size stays the global batch: each worker trains on its share and the gradients
are averaged, so the run computes what one process would. Rank 0 alone writes output_dir. When
torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_WORLD_SIZE) are set, this
process is one such worker (torchrun --no-python --nproc-per-node 2 node bin/tdpo.js train ...).
A worker that dies or hangs stops every other within --dist-timeout (exit 1, naming the rank).

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
      --nproc-per-node N    start N data-parallel workers on this machine
      --nnodes M            machines in the run (default 1)
      --node-rank R         this machine's place, 0..M-1 (default 0)
      --master-addr HOST    node rank 0's address (default 127.0.0.1)
      --master-port PORT    its rendezvous port (default: a free port on one machine, else 29500)
      --dist-timeout SEC    rendezvous and collective timeout (default 30; env TDPO_DIST_TIMEOUT)
  -h, --help                this text
`;

export async function trainCommand(argv: string[]): Promise<number> {
  const { values, tokens } = parseArgs({
    tokens: true,
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      set: { type: 'string', short: 's', multiple: true },
      resume: { type: 'boolean', default: false },
      overwrite: { type: 'boolean', default: false },
      'allow-change': { type: 'string', multiple: true },
      'skip-invalid': { type: 'boolean', default: false },
      'nproc-per-node': { type: 'string' },
      nnodes: { type: 'string' },
      'node-rank': { type: 'string' },
      'master-addr': { type: 'string' },
      'master-port': { type: 'string' },
      'dist-timeout': { type: 'string' },
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
  const flags = {
    nprocPerNode: values['nproc-per-node'],
    nnodes: values.nnodes,
    nodeRank: values['node-rank'],
    masterAddr: values['master-addr'],
    masterPort: values['master-port'],
    distTimeout: values['dist-timeout'],
  };
  if (flags.nprocPerNode !== undefined) {
    // The launcher: the workers get every argument but the launcher's own.
    const rest: string[] = [];
    for (const t of tokens ?? []) {
      if (t.kind !== 'option' || (LAUNCH_OPTIONS as readonly string[]).includes(t.name)) continue;
      // --name=value whatever the user typed: -sKEY=V as "-s=KEY=V" would read as "=KEY=V".
      if (t.value === undefined) rest.push(t.rawName);
      else rest.push(`--${t.name}=${t.value}`);
    }
    return launch(flags, rest);
  }
  const distributed = workerFromEnv(flags) ?? undefined;
  if (!distributed && (flags.nnodes || flags.nodeRank || flags.masterAddr || flags.masterPort)) {
    throw new CliError('--nnodes, --node-rank, --master-addr and --master-port go with --nproc-per-node');
  }
  if (distributed && (buildInfo().distributedBackends ?? []).length === 0) {
    throw new CliError('this build of tdpo has no distributed backend (Gloo, or NCCL in a CUDA build): install libgloo-dev and rebuild (npm rebuild tdpo)');
  }
  const config = loadConfig(values.config ?? null, [...(values.set ?? []), ...(values['skip-invalid'] ? ['data.skip_invalid=true'] : [])]);
  const abort = new AbortController();
  const stop = (why: string) => {
    if (abort.signal.aborted) return;
    process.stderr.write(`\ntdpo: ${why}: finishing the current step and writing a checkpoint, or, before the first step, stopping once the set-up phase in progress ends, without one (Ctrl-C again, a second or more later, stops at once)...\n`);
    abort.abort();
  };
  // Every process applies the rule, workers too: a launcher's worker gets each Ctrl-C from the
  // terminal and from the launcher within milliseconds (a repeat), and torchrun does not force a
  // stop itself. Times are those of the handlers: while a long synchronous phase blocks the event
  // loop, every Ctrl-C pressed meanwhile is served at once and counts as one.
  const kind = stopSignals();
  const onSignal = (sig: NodeJS.Signals) => {
    const k = kind();
    if (k === 'first') return stop(sig);
    if (k === 'repeat') {
      if (!distributed) process.stderr.write(`tdpo: ${sig} within a second of the first, taken as the same one; again to stop at once\n`);
      return;
    }
    process.stderr.write(`tdpo: ${sig} again: stopping now, without a checkpoint; --resume continues from the newest one\n`);
    dieBy(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  if (distributed) watchLauncher(stop);
  // Workers on one machine share its cores (torchrun sets OMP_NUM_THREADS=1 for the same reason).
  const localWorkers = Number(process.env.LOCAL_WORLD_SIZE ?? 1);
  if (distributed && config.threads === null && localWorkers > 1) setNumThreads(Math.max(1, Math.floor(buildInfo().defaultThreads / localWorkers)));
  // Progress lines from rank 0 only; every rank reports its own failures.
  const quiet = (line: string) => !!distributed && distributed.rank !== 0 && /^(step|eval step) /.test(line);
  const tty = process.stderr.isTTY && !distributed;
  const result = await train(config, {
    distributed,
    resume: values.resume,
    overwrite: values.overwrite,
    allowChange,
    signal: abort.signal,
    log: (line) => quiet(line) || process.stderr.write(tty && line.startsWith('step ') ? `\r${line.padEnd(100)}` : `${tty ? '\n' : ''}${line}\n`),
  });
  if (tty) process.stderr.write('\n');
  process.stdout.write(`${JSON.stringify({ steps: result.steps, examples: result.examples, outputDir: result.outputDir, stopped: result.stopped, ...(result.alreadyComplete ? { alreadyComplete: true } : {}) })}\n`);
  return 0;
}
