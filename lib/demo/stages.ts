// The demo's settings and its first stage: the reference model πref, a small GPT-2 trained from
// scratch on the WordNet corpus by train() with loss 'sft' (the pairs are stage 3, pairs.ts). A
// stage writes its artefact and is reused on a rerun.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfig, train } from '../index.js';
import type { Corpus } from './corpus.js';
import type { NarrowVocab } from './vocab.js';

export interface DemoSettings {
  seeds: number[];
  /** The corpus's most frequent tokens kept; sentences with others are left out. */
  vocabTokens: number;
  sftSteps: number;
  sftBatch: number;
  promptTokens: number;
  /** Every sample, for the pairs and the evaluation, is this many tokens: see pairs.ts. */
  continuationTokens: number;
  pairPrompts: number;
  /** πref samples per pair prompt; the best and the worst make the pair. */
  samplesPerPrompt: number;
  /** Smallest reward gap (best − worst) a pair is kept with. */
  minGap: number;
  trainSteps: number;
  trainBatch: number;
  evalEvery: number;
  evalPrompts: number;
  /** Continuations sampled per evaluation prompt: more samples, a smaller sampling error of the mean reward. */
  samplesPerEvalPrompt: number;
  evalPairs: number;
  beta: number;
  lr: number;
  methods: Array<{ name: string; loss: 'dpo' | 'tdpo1' | 'tdpo2'; alpha: number }>;
}

export const modelShape = { n_positions: 48, n_embd: 128, n_layer: 3, n_head: 4 };

/**
 * Bumped whenever what a stage holds changes with the same settings (the model's shape, the
 * training recipe in experiment.ts, the reward, the corpus, what a run's points.json records):
 * stages of another version are redone. 6: points carry the samples' reverse KL.
 */
export const STAGES_VERSION = 6;

/** What the demo itself writes into a stages folder; anything else there is not ours to delete. */
// (One pair set for every seed, before version 5: pairs.jsonl and the rest, still ours to delete.)
const STAGE_ENTRIES = new Set(['settings.json', 'sft.jsonl', 'reference', 'runs', 'pairs.jsonl', 'pairs-stats.json', 'pairs-train.jsonl', 'pairs-eval.jsonl']);
/** A seed's pairs (pairs.ts), and the held-out and training parts experiment.ts splits them into. */
const PAIR_ENTRY = /^(pairs-seed\d+(-train|-eval)?\.jsonl|pairs-stats-seed\d+\.json)$/;

/**
 * The first stage each setting is an input of; every later stage depends on it too. A new setting
 * must be placed here (the type says so), or a stage made without it would be kept.
 */
const STAGE_OF: Record<keyof DemoSettings, 'reference' | 'pairs' | 'runs'> = {
  vocabTokens: 'reference', sftSteps: 'reference', sftBatch: 'reference',
  promptTokens: 'pairs', continuationTokens: 'pairs', evalPrompts: 'pairs', pairPrompts: 'pairs', samplesPerPrompt: 'pairs', minGap: 'pairs',
  // A seed's pairs are files of their own: other seeds draw theirs without touching them.
  seeds: 'runs',
  trainSteps: 'runs', trainBatch: 'runs', evalEvery: 'runs', samplesPerEvalPrompt: 'runs', evalPairs: 'runs', beta: 'runs', lr: 'runs', methods: 'runs',
};
/** The settings πref (sft.jsonl, reference/), or each seed's pairs, are made from, besides the version and model shape. */
const inputsOf = (s: DemoSettings, stage: 'reference' | 'pairs') =>
  JSON.stringify((Object.keys(STAGE_OF) as Array<keyof DemoSettings>).filter((k) => STAGE_OF[k] === 'reference' || STAGE_OF[k] === stage).map((k) => [k, s[k]]));
const REFERENCE_ENTRIES = new Set(['sft.jsonl', 'reference']);
const DRAWN_PAIRS = /^(pairs-seed\d+\.jsonl|pairs-stats-seed\d+\.json)$/;

/** A seed's pairs (in prompt order) and their statistics, in the stages folder. */
export const pairFiles = (dir: string, seed: number) => ({
  pairs: path.join(dir, `pairs-seed${seed}.jsonl`),
  stats: path.join(dir, `pairs-stats-seed${seed}.json`),
});

/** Whether a seed's draw is complete: the statistics are written after the pairs. */
export const pairsDrawn = (dir: string, seed: number): boolean => Object.values(pairFiles(dir, seed)).every((f) => existsSync(f));

/** Whether πref's SFT finished (train() writes final/ last). */
export const referenceMade = (dir: string): boolean => existsSync(path.join(referenceDir(dir), 'model.safetensors'));

/**
 * A stage's file, written whole or not at all (a temporary file renamed over it): a run killed
 * while writing must not leave a truncated file that a rerun would take as finished.
 */
export function writeStageFile(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

/** Up to three names, for a message: "a, b, c, …". */
export const firstFew = (names: string[]): string => `${names.slice(0, 3).join(', ')}${names.length > 3 ? ', …' : ''}`;

/** The settings a stages folder was made with, when it was made by this version with this model. */
function madeWith(file: string): DemoSettings | undefined {
  try {
    const made = JSON.parse(readFileSync(file, 'utf8')) as { version?: unknown; modelShape?: unknown; settings?: unknown };
    const ours = made.version === STAGES_VERSION && JSON.stringify(made.modelShape) === JSON.stringify(modelShape);
    return ours && typeof made.settings === 'object' && made.settings !== null ? (made.settings as DemoSettings) : undefined;
  } catch {
    return undefined; // missing (an earlier version) or unreadable: nothing in the folder is known
  }
}

export interface PreparedStages {
  /** Why stages were deleted, if any were. */
  why: 'fresh' | 'other settings' | null;
  /** With other settings, the stages kept because their own inputs are unchanged ("πref", "the pairs"). */
  kept: string[];
}

/**
 * Makes `dir` ready for a run with `settings`. Made with the same settings and version, it is kept
 * (its finished stages are reused); emptied on `fresh`. Made with other settings, every stage those
 * change is deleted, since it would mix into this run's figures, and a stage whose own inputs are
 * unchanged is kept: πref when its SFT is the same, each seed's pairs when their draw is too (a new
 * learning rate reuses both). A folder holding anything the demo does not write is refused
 * (ERR_TDPO_DEMO_STAGES), never deleted.
 */
export function prepareStages(dir: string, settings: DemoSettings, fresh: boolean): PreparedStages {
  const file = path.join(dir, 'settings.json');
  const current = `${JSON.stringify({ version: STAGES_VERSION, modelShape, settings })}\n`;
  let why: PreparedStages['why'] = null;
  const kept: string[] = [];
  if (existsSync(dir)) {
    const entries = readdirSync(dir);
    // A file writeStageFile left half-written (name.tmp-PID) is ours too.
    const foreign = entries.map((e) => e.replace(/\.tmp-\d+$/, '')).filter((e) => !STAGE_ENTRIES.has(e) && !PAIR_ENTRY.test(e));
    const same = existsSync(file) && readFileSync(file, 'utf8') === current;
    why = fresh ? 'fresh' : same || entries.length === 0 ? null : 'other settings';
    if (why && foreign.length) {
      const message = `${dir} holds files the demo did not write (${firstFew(foreign)}); choose another --out`;
      throw Object.assign(new Error(message), { code: 'ERR_TDPO_DEMO_STAGES' });
    }
    const before = why === 'other settings' ? madeWith(file) : undefined;
    const sameAs = (stage: 'reference' | 'pairs') => before !== undefined && inputsOf(before, stage) === inputsOf(settings, stage);
    if (why && sameAs('reference')) {
      const pairsToo = sameAs('pairs');
      const keep = (e: string) => e === 'settings.json' || REFERENCE_ENTRIES.has(e) || (pairsToo && DRAWN_PAIRS.test(e));
      for (const e of entries) if (!keep(e)) rmSync(path.join(dir, e), { recursive: true, force: true });
      // What is kept and finished, for the message (an unfinished πref is resumed, not redone).
      if (referenceMade(dir)) kept.push('πref');
      if (pairsToo && settings.seeds.some((seed) => pairsDrawn(dir, seed))) kept.push('the pairs');
    } else if (why) {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, current);
  return { why, kept };
}

/** Sentences as [EOS, tokens..., EOS] rows of the narrowed vocabulary, at most maxLen long. */
export function encodeSentences(sentences: string[], vocab: NarrowVocab, maxLen: number): Int32Array[] {
  const rows: Int32Array[] = [];
  for (const s of sentences) {
    const ids = vocab.encode(s);
    if (!ids || ids.length + 2 > maxLen) continue;
    rows.push(Int32Array.from([vocab.eosId, ...ids, vocab.eosId]));
  }
  return rows;
}

/** The folder of πref once trained (the SFT run's final checkpoint). */
export const referenceDir = (dir: string): string => path.join(dir, 'reference', 'final');

/** Stage 2: πref by SFT from scratch, through train(). Returns its folder. */
export async function trainReference(
  dir: string,
  corpus: Corpus,
  vocab: NarrowVocab,
  s: DemoSettings,
  progress: (done: number, total: number, loss: number) => void,
): Promise<string> {
  mkdirSync(dir, { recursive: true });
  // Each sentence as an SFT line: the leading EOS is the prompt (context, not a target); train()
  // appends the closing EOS to the response, as for every response.
  const data = path.join(dir, 'sft.jsonl');
  const rows = encodeSentences(corpus.train, vocab, modelShape.n_positions);
  writeFileSync(data, rows.map((r) => JSON.stringify({ prompt_ids: [r[0]], chosen_ids: Array.from(r.subarray(1, -1)) })).join('\n') + '\n');
  const config = loadConfig(null, [], {
    model: { model_type: 'gpt2', vocab_size: vocab.size, eos_token_id: vocab.eosId, ...modelShape },
    data: { train: data, eval: null, format: 'tokenized', eval_size: 0, skip_invalid: false, drop_last: true, group_by_length: true },
    loss: { name: 'sft', alpha: 0, beta: 0.1 },
    // AdamW with a linear warm-up over 50 steps, then constant: short and stable from scratch.
    optimizer: 'adamw',
    lr: 2e-3,
    warmup_steps: 49,
    max_grad_norm: 1,
    batch_size: s.sftBatch,
    max_steps: s.sftSteps,
    max_length: modelShape.n_positions,
    max_prompt_length: 1,
    seed: 1234,
    output_dir: path.join(dir, 'reference'),
  });
  await train(config, { resume: true, onStep: (m) => typeof m.loss === 'number' && m.step !== undefined && progress(m.step, s.sftSteps, m.loss) });
  return referenceDir(dir);
}

/** Held-out prompts: EOS + the first promptTokens tokens of a held-out sentence (one that goes on). */
export function heldOutPrompts(corpus: Corpus, vocab: NarrowVocab, promptTokens: number, count: number): number[][] {
  const out: number[][] = [];
  for (const s of corpus.heldOut) {
    const ids = vocab.encode(s);
    if (!ids || ids.length <= promptTokens + 1) continue;
    out.push([vocab.eosId, ...ids.subarray(0, promptTokens)]);
    if (out.length === count) break;
  }
  return out;
}

/**
 * A fixed-length continuation's ids and its text: where πref ended a sentence (EOS) and began
 * another, the sentences are joined by a space.
 */
export function continuationText(ids: ArrayLike<number>, vocab: NarrowVocab): { ids: number[]; text: string } {
  const list = Array.from(ids);
  const sentences: number[][] = [[]];
  for (const id of list) {
    if (id === vocab.eosId) sentences.push([]);
    else sentences[sentences.length - 1].push(id);
  }
  const text = sentences.filter((x) => x.length).map((x) => vocab.decode(x).trim()).join(' ');
  return { ids: list, text };
}
