#!/usr/bin/env node
// Sampling cost in generate(): the demo's evaluation shape (a 3-layer, 128-wide GPT-2 with an
// 8,192-token vocabulary, random weights; 1,024 rows of a 3-token prompt, 10 new tokens) at
// temperature 1 against greedy, whose difference is the cost of drawing the tokens.
// Usage: node scripts/bench-sampling.mjs [runs]   (after `npm run build:ts`; medians of runs)
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Model, getNumThreads, buildInfo } = require('../dist/cjs/index.js');
const { median } = require('../dist/cjs/bench/loss-bench.js');

const runs = Number(process.argv[2] ?? 5);
const config = { model_type: 'gpt2', vocab_size: 8192, n_positions: 48, n_embd: 128, n_layer: 3, n_head: 4 };
const model = await Model.create(config, { seed: 1 });
const rows = Array.from({ length: 1024 }, (_, i) => Int32Array.from([(7 * i) % 8192, (13 * i + 1) % 8192, (29 * i + 2) % 8192]));
const time = async (options) => {
  await model.generate(rows, options); // warm-up
  const ms = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await model.generate(rows, options);
    ms.push(performance.now() - t0);
  }
  return median(ms);
};
const sampled = await time({ maxNewTokens: 10, temperature: 1, seed: 3 });
const greedy = await time({ maxNewTokens: 10, temperature: 0 });
model.dispose();
console.log(`generate 1,024 rows x 10 new tokens, V=8192, ${getNumThreads()} threads, libtorch ${buildInfo().torchVersion}; medians of ${runs} runs`);
console.log(`  temperature 1: ${sampled.toFixed(0)} ms`);
console.log(`  greedy:        ${greedy.toFixed(0)} ms`);
console.log(`  sampling:      ${(sampled - greedy).toFixed(0)} ms (${((sampled - greedy) / 10).toFixed(1)} ms a step)`);
