#!/usr/bin/env node
// What `entropy: true` costs the loss: the fused forward (B=8 T=256 V=50257, the loss benchmark's
// default shape) with and without the policy entropy, calls alternating in one process so that the
// machine's drift falls on both alike. (The demo's use of it: scripts/bench-sample-stats.mjs.)
// Usage: node scripts/bench-entropy.mjs [calls]   (after `npm run build:ts`; medians of calls)
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { tdpoLossSync, buildInfo } = require('../dist/cjs/index.js');

const calls = Number(process.argv[2] ?? 21);
const B = 8, T = 256, V = 50257, n = B * T * V;
const policyLogits = new Float32Array(n), referenceLogits = new Float32Array(n), labels = new Int32Array(B * T);
let state = 1;
const rand = () => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648;
for (let i = 0; i < n; i++) {
  policyLogits[i] = (rand() - 0.5) * 6;
  referenceLogits[i] = policyLogits[i] + (rand() - 0.5);
}
for (let i = 0; i < B * T; i++) labels[i] = i % T < 16 ? -100 : Math.floor(rand() * V);
const inputs = { policyLogits, referenceLogits, labels, shape: [B, T, V] };

const times = { off: [], on: [] };
for (let k = 0; k < calls + 2; k++) {
  for (const [name, entropy] of k % 2 ? [['off', false], ['on', true]] : [['on', true], ['off', false]]) {
    const t0 = performance.now();
    tdpoLossSync(inputs, { entropy });
    if (k >= 2) times[name].push(performance.now() - t0);
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const [off, on] = [median(times.off), median(times.on)];
console.log(`fused forward, B=${B} T=${T} V=${V}, ${buildInfo().kernelIsa} kernel, median of ${calls} alternating calls:`);
console.log(`  entropy off ${off.toFixed(1)} ms, on ${on.toFixed(1)} ms (${(((on - off) / off) * 100).toFixed(1)}%)`);
