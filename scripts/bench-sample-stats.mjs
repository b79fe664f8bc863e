#!/usr/bin/env node
// The demo's per-checkpoint sample statistics (lib/demo/experiment.ts sampleStats: sequence KL and
// entropy of 1,024 samples, the evaluation's shape: a 3-layer, 128-wide GPT-2, V = 8,192, random
// weights, 3-token prompts and 10 sampled tokens), which now take the entropy from the train step's
// own statistics (one forward of the policy), against the two ways before it: a second forward by
// sequenceLogprobs (tokenEntropies, in C++), and before that the logits brought into JS.
// Usage: node scripts/bench-sample-stats.mjs [runs]   (after `npm run build:ts`; medians of runs)
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Model, TrainStep, collatePairs, getNumThreads, buildInfo } = require('../dist/cjs/index.js');
const { sampleStats } = require('../dist/cjs/demo/experiment.js');
const { median } = require('../dist/cjs/bench/loss-bench.js');

const runs = Number(process.argv[2] ?? 5);
const config = { model_type: 'gpt2', vocab_size: 8192, n_positions: 48, n_embd: 128, n_layer: 3, n_head: 4 };
const policy = await Model.create(config, { seed: 1 });
const reference = await Model.create(config, { seed: 2 });
const prompts = Array.from({ length: 1024 }, (_, i) => [(7 * i) % 8192, (13 * i + 1) % 8192, (29 * i + 2) % 8192]);
const conts = (await policy.generate(prompts.map((p) => Int32Array.from(p)), { maxNewTokens: 10, temperature: 1, seed: 3 })).map((x) => Array.from(x));

// The KL as the train step gives it (what both ways before took their KL from).
async function klFromTrainStep() {
  const rows = prompts.map((p, i) => ({ inputIds: [...p, ...conts[i]], labels: [...p.map(() => -100), ...conts[i]] }));
  const B = rows.length;
  const batch = collatePairs(rows.slice(0, B / 2).map((chosen, i) => ({ chosen, rejected: rows[B / 2 + i] })), 0);
  await (await TrainStep.create(policy, { loss: 'tdpo2', reference })).evaluate(batch);
  const T = batch.shape[1];
  return { rows, B, batch, T };
}

// Before: the KL from the train step, then each block's logits crossed to JS for the entropy.
async function before() {
  const { rows, B, batch, T } = await klFromTrainStep();
  let entropy = 0;
  let positions = 0;
  for (let from = 0; from < B; from += 256) {
    const { logits, shape } = await policy.forward(batch.inputIds.subarray(from * T, (from + 256) * T), [256, T], { attentionMask: batch.attentionMask?.subarray(from * T, (from + 256) * T) });
    const V = shape[2];
    for (let b = 0; b < 256; b++) {
      for (let t = prompts[from + b].length - 1; t < rows[from + b].inputIds.length - 1; t++) {
        const z = logits.subarray((b * T + t) * V, (b * T + t + 1) * V);
        let max = -Infinity;
        for (let v = 0; v < V; v++) max = Math.max(max, z[v]);
        let sum = 0;
        let dot = 0;
        for (let v = 0; v < V; v++) {
          const e = Math.exp(z[v] - max);
          sum += e;
          dot += e * (z[v] - max);
        }
        entropy += Math.log(sum) - dot / sum;
        positions++;
      }
    }
  }
  return entropy / positions;
}

// The way before the train step gave the entropy: the KL from the train step, then a second forward
// of the policy by sequenceLogprobs, 256 rows at a time, for tokenEntropies.
async function secondForward() {
  const { rows, B, batch, T } = await klFromTrainStep();
  let entropy = 0;
  let positions = 0;
  for (let from = 0; from < B; from += 256) {
    const labels = new Int32Array(256 * T).fill(-100);
    for (let b = 0; b < 256; b++) {
      for (let t = prompts[from + b].length - 1; t < rows[from + b].inputIds.length - 1; t++) {
        labels[b * T + t] = rows[from + b].inputIds[t + 1];
        positions++;
      }
    }
    const { tokenEntropies } = await policy.sequenceLogprobs(batch.inputIds.subarray(from * T, (from + 256) * T), [256, T], labels, { attentionMask: batch.attentionMask?.subarray(from * T, (from + 256) * T) });
    for (const h of tokenEntropies) entropy += h;
  }
  return entropy / positions;
}

const time = async (f) => {
  const value = await f(); // warm-up
  const ms = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await f();
    ms.push(performance.now() - t0);
  }
  return { ms: median(ms), value };
};
const now = await time(async () => (await sampleStats(policy, reference, prompts, conts, 0)).entropy);
const second = await time(secondForward);
const old = await time(before);
console.log(`sample statistics of 1,024 samples x 10 tokens, V=8192, ${getNumThreads()} threads, libtorch ${buildInfo().torchVersion}; medians of ${runs} runs`);
console.log(`  entropy in the train step's statistics: ${now.ms.toFixed(0)} ms (entropy ${now.value.toFixed(6)})`);
console.log(`  a second forward (tokenEntropies):      ${second.ms.toFixed(0)} ms (entropy ${second.value.toFixed(6)})`);
console.log(`  entropy in JS over the logits:          ${old.ms.toFixed(0)} ms (entropy ${old.value.toFixed(6)})`);
