// `tdpo demo`: the end-to-end TDPO vs DPO experiment (lib/demo), what `npm start` runs.
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildCorpus } from '../demo/corpus.js';
import { runExperiment } from '../demo/experiment.js';
import { writeReport, table } from '../demo/report.js';
import { samplePairs, trainReference, type DemoSettings } from '../demo/stages.js';
import { NarrowVocab } from '../demo/vocab.js';

export const demoHelp = `Usage: tdpo demo [--quick] [--out DIR] [--fresh]

Rebuilds the paper's controlled-sentiment experiment at CPU scale: trains a small GPT-2 on WordNet's
example sentences (πref), samples preference pairs from it scored by a sentiment lexicon, trains
DPO, TDPO1 and TDPO2 (α = 0.5 and 1.0) from πref on the same pairs, and writes DIR/report.md with
the reward-KL frontier and KL curves as SVG charts, and DIR/metrics.json.

Options:
      --quick      fewer steps and one seed (about a minute)
      --out DIR    where the stages and the report go (default demo-output); finished stages
                   (πref, the pairs) are reused on a rerun
      --fresh      start over: delete DIR's stages first
  -h, --help       this text
`;

const methods: DemoSettings['methods'] = [
  { name: 'DPO', loss: 'dpo', alpha: 0 },
  { name: 'TDPO1', loss: 'tdpo1', alpha: 0 },
  { name: 'TDPO2 α=0.5', loss: 'tdpo2', alpha: 0.5 },
  { name: 'TDPO2 α=1.0', loss: 'tdpo2', alpha: 1.0 },
];

export const fullSettings: DemoSettings = {
  seeds: [1, 2], sftSteps: 400, sftBatch: 64, promptTokens: 3, continuationTokens: 12, pairPrompts: 1024,
  trainSteps: 60, trainBatch: 32, evalEvery: 15, evalPrompts: 64, evalPairs: 128, beta: 0.1, lr: 1e-4, methods,
};
export const quickSettings: DemoSettings = {
  ...fullSettings, seeds: [1], sftSteps: 120, pairPrompts: 256, trainSteps: 16, trainBatch: 16, evalEvery: 8, evalPrompts: 32, evalPairs: 32,
};

export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      out: { type: 'string' },
      fresh: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(demoHelp);
    return 0;
  }
  const s = values.quick ? quickSettings : fullSettings;
  const out = path.resolve(values.out ?? 'demo-output');
  // Stages of a --quick run and a full run are kept apart: their settings differ.
  const stages = path.join(out, values.quick ? 'stages-quick' : 'stages');
  if (values.fresh) rmSync(stages, { recursive: true, force: true });
  mkdirSync(stages, { recursive: true });
  const t0 = Date.now();
  const say = (m: string) => process.stderr.write(`${m}\n`);
  const tty = process.stderr.isTTY;
  const line = (m: string) => process.stderr.write(tty ? `\r${m.padEnd(90)}` : `${m}\n`);
  const eta = (fraction: number, since: number) => (fraction > 0 ? `, about ${Math.round(((Date.now() - since) / fraction) * (1 - fraction) / 1000)} s left` : '');

  say(`[1/4] corpus and vocabulary`);
  const corpus = buildCorpus();
  const vocab = NarrowVocab.fromTexts([...corpus.train, ...corpus.heldOut]);
  say(`      ${corpus.train.length} training / ${corpus.heldOut.length} held-out sentences, ${vocab.size} tokens`);

  const reused = existsSync(path.join(stages, 'reference', 'model.safetensors'));
  say(`[2/4] πref by SFT${reused ? ' (reused)' : ''}`);
  const t2 = Date.now();
  const refDir = await trainReference(stages, corpus, vocab, s, (done, total, loss) =>
    (done % 10 === 0 || done === total) && line(`      step ${done}/${total}, loss ${loss.toFixed(3)}${eta(done / total, t2)}`));
  if (tty && !reused) process.stderr.write('\n');

  const pairsReused = existsSync(path.join(stages, 'pairs-stats.json'));
  say(`[3/4] preference pairs from πref, scored by sentiment${pairsReused ? ' (reused)' : ''}`);
  const t3 = Date.now();
  const pairStats = await samplePairs(stages, refDir, corpus, vocab, s, (done, total) =>
    line(`      ${done}/${total} prompts sampled${eta(done / total, t3)}`));
  if (tty && !pairsReused) process.stderr.write('\n');
  say(`      ${pairStats.pairs} pairs from ${pairStats.prompts} prompts, ${pairStats.ties} ties dropped`);

  say(`[4/4] ${s.methods.length} methods x ${s.seeds.length} seed(s), ${s.trainSteps} steps each`);
  const t4 = Date.now();
  const experiment = await runExperiment(stages, refDir, corpus, vocab, s, (m, f) => line(`      ${m}${eta(f, t4)}`));
  if (tty) process.stderr.write('\n');
  const seconds = (Date.now() - t0) / 1000;
  const { summary } = await writeReport(out, {
    settings: s, quick: values.quick, pairStats, experiment, vocabSize: vocab.size,
    corpus: { train: corpus.train.length, heldOut: corpus.heldOut.length }, seconds,
  });
  writeFileSync(path.join(out, 'vocab.json'), `${JSON.stringify(Array.from(vocab.gpt2Ids))}\n`);
  process.stdout.write(`${table(summary)}\n\nreport: ${path.join(out, 'report.md')} (${(seconds / 60).toFixed(1)} min)\n`);
  return 0;
}
