// At each evaluation: continuations of the first eval prompts from the policy and the reference,
// appended to <output_dir>/samples.jsonl, seeded by the step so that a resumed run samples what an
// uninterrupted one would.
import { appendFileSync } from 'node:fs';
import path from 'node:path';
import type { TrainConfig } from '../config.js';
import type { TokenizedPair } from '../data/tokenize.js';
import type { Model } from '../model.js';
import type { Tokenizer } from '../tokenizer.js';
import { positionsOf } from './data.js';

export const SAMPLES_FILE = 'samples.jsonl';

export async function writeSamples(
  c: TrainConfig,
  step: number,
  evalPairs: TokenizedPair[],
  models: { policy: Model; reference: Model | null; tokenizer: Tokenizer | null; eos: number },
): Promise<void> {
  const { policy, reference, tokenizer, eos } = models;
  const prompts = evalPairs.slice(0, c.samples).map((p) => {
    const n = p.chosen.labels.findIndex((l) => l !== -100);
    return Int32Array.from(p.chosen.inputIds.slice(0, n < 0 ? p.chosen.inputIds.length : n));
  });
  if (prompts.length === 0) return;
  const room = Math.min(c.sample_max_new_tokens, positionsOf(policy).positions - Math.max(...prompts.map((p) => p.length)));
  if (room < 1) return;
  // The EOS the responses were trained to end with, and the model's own stop ids.
  const opts = { maxNewTokens: room, temperature: 1, seed: c.seed + step, eosTokenId: [...new Set([eos, ...policy.stopTokenIds])] };
  const fromPolicy = await policy.generate(prompts, opts);
  const fromReference = reference ? await reference.generate(prompts, opts) : null;
  const text = (ids: ArrayLike<number>) => (tokenizer ? tokenizer.decode(ids, { skipUnknown: true }) : Array.from(ids));
  const lines = prompts.map((p, i) =>
    JSON.stringify({ step, prompt: text(p), policy: text(fromPolicy[i]), ...(fromReference ? { reference: text(fromReference[i]) } : {}) }),
  );
  appendFileSync(path.join(c.output_dir, SAMPLES_FILE), `${lines.join('\n')}\n`);
}
