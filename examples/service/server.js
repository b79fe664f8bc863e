#!/usr/bin/env node
// A small HTTP service over tdpo: one model loaded once, generation / log-prob / loss requests, and
// training jobs in the same process. The model calls run off the event loop (tdpo's promises run on
// worker threads), so the loop stays free to answer /health while a job trains.
//
//   node examples/service/server.js [--model DIR] [--reference DIR] [--port N] [--threads N] ...
//
// Without --model it serves a fresh tiny GPT-2 (random weights, GPT-2's vocabulary), which is
// enough to exercise every route. See README.md here for the routes and the limits.
import { createServer } from 'node:http';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Model, Tokenizer, setNumThreads } from 'tdpo';
import { Budget } from './budget.js';
import { Jobs } from './jobs.js';
import { createHandler } from './routes.js';

/** The fresh model served without --model: GPT-2's vocabulary (so text works), everything else tiny. */
const TINY_GPT2 = { model_type: 'gpt2', vocab_size: 50257, n_positions: 256, n_embd: 32, n_layer: 2, n_head: 2, eos_token_id: 50256, bos_token_id: 50256 };

const { values: a } = parseArgs({
  options: {
    model: { type: 'string' },
    reference: { type: 'string' },
    tokenizer: { type: 'string' },
    port: { type: 'string', default: '8080' },
    host: { type: 'string', default: '127.0.0.1' },
    threads: { type: 'string' },
    'max-inflight': { type: 'string', default: '16' },
    'max-jobs': { type: 'string', default: '1' },
    'memory-mb': { type: 'string', default: '512' },
    'max-rss-mb': { type: 'string', default: '4096' },
    'max-body-kb': { type: 'string', default: '1024' },
    'max-new-tokens': { type: 'string', default: '256' },
    'drain-timeout-s': { type: 'string', default: '60' },
  },
  strict: true,
});
const int = (name) => {
  const n = Number(a[name]);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got '${a[name]}'`);
  return n;
};
const log = (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);

if (a.threads) setNumThreads(int('threads'));
// Loaded once: every request shares these (tdpo runs concurrent calls on one model one at a time).
const model = a.model ? await Model.load(a.model) : await Model.create(TINY_GPT2, { seed: 0 });
// Without --reference the policy scores against itself (KL and rewards 0) unless both are fresh:
// then a second seed, so that /loss shows non-trivial numbers.
const reference = a.reference ? await Model.load(a.reference) : a.model ? model : await Model.create(TINY_GPT2, { seed: 1 });
const tokenizerFile = a.tokenizer ?? (a.model ? path.join(a.model, 'tokenizer.json') : null);
// GPT-2's own tokenizer only for a GPT-2 of GPT-2's vocabulary: other models' ids would decode to
// the wrong text without any error. Without a tokenizer, clients send token ids.
const isGpt2 = model.config.model_type === 'gpt2' && Number(model.config.vocab_size) === 50257;
const tokenizer = tokenizerFile && existsSync(tokenizerFile) ? Tokenizer.fromFile(tokenizerFile) : isGpt2 ? Tokenizer.gpt2() : null;

const budget = new Budget({ maxInflight: int('max-inflight'), memoryBytes: int('memory-mb') * 2 ** 20, maxRssBytes: int('max-rss-mb') * 2 ** 20 });
const jobs = new Jobs({ maxJobs: int('max-jobs'), budget, log });
const ctx = { model, reference, tokenizer, budget, jobs, log, draining: false, limits: { maxBodyBytes: int('max-body-kb') * 1024, maxNewTokens: int('max-new-tokens') } };
const server = createServer(createHandler(ctx));
// A client that sends its headers or body too slowly must not hold a connection for ever.
server.headersTimeout = 10_000;
server.requestTimeout = 30_000;

server.listen(int('port'), a.host, () => {
  const { port } = server.address();
  log(`listening on http://${a.host}:${port} (model ${a.model ?? 'fresh tiny gpt2'}, ${model.parameterCount} parameters)`);
  // One machine-readable line for whoever started us (tests, the load driver).
  process.stdout.write(`${JSON.stringify({ listening: port, pid: process.pid })}\n`);
});

// SIGTERM (and Ctrl-C): stop taking work, let in-flight requests finish, stop every job at its next
// step with a checkpoint, then exit 0. Past the drain timeout, exit 1 rather than hang a deploy.
async function drain(signal) {
  if (ctx.draining) return;
  ctx.draining = true;
  log(`${signal}: draining (${budget.inflight} requests in flight, ${jobs.running.length} job(s) running)`);
  const timer = setTimeout(() => {
    log(`drain took over ${a['drain-timeout-s']} s; exiting without waiting further`);
    process.exit(1);
  }, int('drain-timeout-s') * 1000);
  timer.unref();
  const closed = new Promise((resolve) => server.close(resolve)); // resolves when the last connection ends
  server.closeIdleConnections();
  await jobs.stopAll(); // ends the jobs' event streams too
  await closed;
  if (reference !== model) reference.dispose();
  model.dispose();
  log('drained; exiting');
  process.exit(0);
}
process.on('SIGTERM', () => void drain('SIGTERM'));
process.on('SIGINT', () => void drain('SIGINT'));
