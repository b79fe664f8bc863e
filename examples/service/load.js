#!/usr/bin/env node
// Load and soak for the service, on loopback: starts server.js in a child process (as a deploy
// would), starts a training job in it, and drives /generate, /loss and /health with autocannon
// (a dev dependency: a checkout's tool, not something a service installing tdpo gets).
//
//   node examples/service/load.js                 # 10 s of the mix; prints the figures
//   node examples/service/load.js --seconds 30
//   node examples/service/load.js --soak 600      # the mix for 10 minutes, RSS and fds every 10 s
//   (also: npx tdpo bench --service [--seconds N | --soak N])
//
// The tests (test/service.test.ts) use the same functions with a few seconds of traffic.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');

/**
 * Starts server.js on a free port; resolves once it listens. SERVICE_NODE_ARGS adds Node flags to
 * the server alone (e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof' or '--trace-gc', to see what holds
 * its event loop).
 */
export function startService(args = [], { env = process.env } = {}) {
  const child = spawn(process.execPath, [...(process.env.SERVICE_NODE_ARGS ?? '').split(' ').filter(Boolean), path.join(here, 'server.js'), '--port', '0', ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = [];
  child.stderr.on('data', (d) => log.push(...d.toString().split('\n').filter(Boolean)));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const line = out.split('\n').find((l) => l.startsWith('{"listening"'));
      if (line) {
        const { listening } = JSON.parse(line);
        resolve({ url: `http://127.0.0.1:${listening}`, child, log, exited });
      }
    });
    exited.then(({ code, signal }) => reject(new Error(`server.js exited (${code ?? signal}) before listening:\n${log.join('\n')}`)));
  });
}

/** JSON request; resolves { status, body } (never throws on a 4xx/5xx). */
export async function call(url, method, route, body) {
  const res = await fetch(url + route, { method, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** The synthetic preference set (examples/synthetic/make-data.mjs) in `dir`. */
export function makeData(dir) {
  const r = spawnSync(process.execPath, [path.join(root, 'examples', 'synthetic', 'make-data.mjs'), dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return { train: path.join(dir, 'train.jsonl'), eval: path.join(dir, 'eval.jsonl') };
}

/** POST /jobs body: the synthetic example's config, redirected by overrides, as --set would. */
export function jobBody(data, outputDir, overrides = []) {
  return {
    file: path.join(root, 'examples', 'synthetic', 'config.yaml'),
    overrides: [`data.train=${data.train}`, `data.eval=${data.eval}`, `output_dir=${outputDir}`, ...overrides],
    overwrite: true,
  };
}

/** Polls GET /jobs/:id until `pred(job)` holds. */
export async function waitJob(url, id, pred, timeoutMs = 60_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const { body } = await call(url, 'GET', `/jobs/${id}`);
    if (pred(body)) return body;
    if (Date.now() > until) throw new Error(`job ${id} did not get there in time: ${JSON.stringify(body)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const PROMPTS = ['The weather today', 'Once upon a time', 'Q: What is TDPO?\nA:', 'def main():', 'Dear team,', 'In 1969 the'];

/** The request mix: each entry is one autocannon instance, so each route gets its own latencies. */
export function mix({ generateConnections = 2, lossConnections = 2, healthPerSecond = 50, maxNewTokens = 16 } = {}) {
  let n = 0;
  const json = { 'content-type': 'application/json' };
  return {
    generate: {
      connections: generateConnections,
      requests: [{ method: 'POST', path: '/generate', headers: json, setupRequest: (req) => ({ ...req, body: JSON.stringify({ prompt: PROMPTS[n++ % PROMPTS.length], options: { maxNewTokens, temperature: 0.8, topK: 40, seed: n } }) }) }],
    },
    loss: {
      connections: lossConnections,
      requests: [{ method: 'POST', path: '/loss', headers: json, setupRequest: (req) => ({ ...req, body: JSON.stringify({ prompt: PROMPTS[n++ % PROMPTS.length], chosen: ' a kind and helpful answer', rejected: ' a rude reply', options: { loss: 'tdpo2', beta: 0.1, alpha: 0.5 } }) }) }],
    },
    // Health is a probe, not a flood: a balancer's rate. Unthrottled, it would measure only how fast
    // autocannon and the server can ping-pong on two cores, starving the work the mix is about.
    health: { connections: 1, overallRate: healthPerSecond, requests: [{ method: 'GET', path: '/health' }] },
  };
}

/**
 * Runs the mix for `seconds` and returns, per route, throughput, latency percentiles (ms) and
 * errors, plus the server's event-loop lag over the same window (from GET /stats, which resets it).
 */
export async function runMix(url, seconds, mixOptions = {}, jobId = null) {
  const jobStep = async () => (jobId === null ? 0 : (await call(url, 'GET', `/jobs/${jobId}`)).body.step);
  const step0 = await jobStep();
  await call(url, 'GET', '/stats'); // starts the lag window here
  const entries = Object.entries(mix(mixOptions));
  const results = await Promise.all(entries.map(([, o]) => autocannon({ url, duration: seconds, timeout: 20, ...o })));
  const stats = (await call(url, 'GET', '/stats')).body;
  const steps = (await jobStep()) - step0;
  const routes = {};
  entries.forEach(([name], i) => {
    const r = results[i];
    routes[name] = {
      requests: r.requests.total,
      perSecond: Math.round((r.requests.total / (r.duration || seconds)) * 10) / 10,
      p50Ms: r.latency.p50,
      p99Ms: r.latency.p99,
      maxMs: r.latency.max,
      errors: r.errors,
      timeouts: r.timeouts,
      non2xx: r.non2xx,
    };
  });
  const errors = Object.values(routes).reduce((s, r) => s + r.errors + r.timeouts + r.non2xx, 0);
  return { seconds, routes, errors, training: jobId === null ? null : { steps, perSecond: Math.round((steps / seconds) * 10) / 10 }, eventLoopLagMs: stats.eventLoopLagMs, server: { rssBytes: stats.rssBytes, fds: stats.fds, handles: stats.handles, refused: stats.refused } };
}

export function formatMix(r) {
  const rows = Object.entries(r.routes).map(([name, x]) => `  ${`/${name}`.padEnd(10)} ${String(x.requests).padStart(6)} req  ${String(x.perSecond).padStart(7)} req/s   p50 ${String(x.p50Ms).padStart(5)} ms   p99 ${String(x.p99Ms).padStart(5)} ms   max ${String(x.maxMs).padStart(5)} ms   errors ${x.errors + x.timeouts + x.non2xx}`);
  return [
    `${r.seconds} s of concurrent traffic while a training job runs in the same process:`,
    ...rows,
    ...(r.training ? [`  training job: ${r.training.steps} optimizer steps (${r.training.perSecond}/s) of 32 pairs in the same window`] : []),
    `  event loop: worst lag ${r.eventLoopLagMs.max} ms, p99 ${r.eventLoopLagMs.p99} ms (monitorEventLoopDelay, 10 ms resolution)`,
    `  errors (connection errors + timeouts + non-2xx): ${r.errors}; server RSS ${(r.server.rssBytes / 2 ** 20).toFixed(0)} MB, ${r.server.fds} fds`,
  ].join('\n');
}

/** Every metrics line parses, steps count up by one, and every step-N/ (and final/) is complete. */
export function checkRunFiles(outputDir) {
  const problems = [];
  const lines = readFileSync(path.join(outputDir, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean);
  let step = 0;
  for (const [i, l] of lines.entries()) {
    let m;
    try {
      m = JSON.parse(l);
    } catch {
      problems.push(`metrics.jsonl:${i + 1} does not parse`);
      continue;
    }
    if (typeof m.loss === 'number') {
      if (m.step !== step + 1) problems.push(`metrics.jsonl:${i + 1}: step ${m.step} after ${step}`);
      if (!Number.isFinite(m.loss)) problems.push(`metrics.jsonl:${i + 1}: loss ${m.loss}`);
      step = m.step;
    }
  }
  const entries = readdirSync(outputDir);
  for (const e of entries) {
    if (e.startsWith('.')) problems.push(`left behind: ${e}`);
    if (/^(step-\d+|final)$/.test(e)) {
      for (const f of ['config.json', 'model.safetensors', 'optimizer.pt', 'trainer.json']) {
        if (!existsSync(path.join(outputDir, e, f))) problems.push(`${e}/ lacks ${f}`);
      }
    }
  }
  const checkpoints = entries.filter((e) => /^step-\d+$/.test(e)).map((e) => Number(e.slice(5))).sort((a, b) => a - b);
  return { problems, metricsSteps: step, checkpoints };
}

// ---- the command ----------------------------------------------------------------------------

async function main() {
  const { values } = parseArgs({
    options: { seconds: { type: 'string', default: '10' }, soak: { type: 'string' }, threads: { type: 'string' }, json: { type: 'boolean', default: false }, keep: { type: 'boolean', default: false } },
    strict: true,
  });
  const work = mkdtempSync(path.join(tmpdir(), 'tdpo-service-load-'));
  const data = makeData(path.join(work, 'data'));
  const say = (line) => values.json || process.stderr.write(`${line}\n`);
  const svc = await startService([...(values.threads ? ['--threads', values.threads] : []), '--max-jobs', '2']);
  const out = path.join(work, 'run');
  const started = await call(svc.url, 'POST', '/jobs', jobBody(data, out, ['max_steps=1000000', 'save_every=50']));
  if (started.status !== 202) throw new Error(`POST /jobs: ${JSON.stringify(started.body)}`);
  const job = started.body.id;
  await waitJob(svc.url, job, (j) => j.step >= 1);
  say(`server ${svc.url} (pid ${svc.child.pid}); job ${job} training into ${out}`);
  const report = { machine: machine() };

  if (values.soak) report.soak = await soak(svc, Number(values.soak), say, { data, work, job });
  else report.load = await runMix(svc.url, Number(values.seconds), {}, job);

  await call(svc.url, 'DELETE', `/jobs/${job}`);
  const ended = await waitJob(svc.url, job, (j) => j.state !== 'running' && j.state !== 'stopping', 120_000);
  svc.child.kill('SIGTERM');
  const exit = await svc.exited;
  report.job = { state: ended.state, steps: ended.step, checkpoint: ended.result?.outputDir, ...checkRunFiles(out) };
  report.exit = exit;
  report.machine.loadAfter = machine().load;
  if (values.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else {
    if (report.load) process.stdout.write(`${formatMix(report.load)}\n`);
    if (report.soak) process.stdout.write(`${formatSoak(report.soak)}\n`);
    process.stdout.write(`job: ${report.job.state} at step ${report.job.steps} (${report.job.checkpoint}); metrics steps ${report.job.metricsSteps}; problems: ${report.job.problems.length ? report.job.problems.join('; ') : 'none'}\n`);
    process.stdout.write(`server exit: code ${exit.code}${exit.signal ? `, signal ${exit.signal}` : ''}; machine: ${report.machine.cpus}, load ${report.machine.load} at start, ${report.machine.loadAfter} at end\n`);
  }
  if (!values.keep) rmSync(work, { recursive: true, force: true });
  return report.job.problems.length || exit.code !== 0 ? 1 : 0;
}

/**
 * The mix for `seconds`, in 10 s slices with /stats read between them (RSS, fds, handles, lag);
 * every minute a short second job trains to completion, so job set-up and tear-down are soaked too.
 */
async function soak(svc, seconds, say, { data, work, job }) {
  const samples = [];
  const slices = [];
  const shortJobs = [];
  // Before any traffic (the long job already training): the fds and handles the service holds idle.
  const idle0 = (await call(svc.url, 'GET', '/stats')).body;
  const t0 = Date.now();
  let slice = 0;
  while ((Date.now() - t0) / 1000 < seconds) {
    if (slice % 6 === 3) {
      const out = path.join(work, `short-${slice}`);
      const r = await call(svc.url, 'POST', '/jobs', jobBody(data, out, ['max_steps=20', 'save_every=10']));
      shortJobs.push({ id: r.body.id, status: r.status, out });
    }
    const r = await runMix(svc.url, 10, {}, job);
    const s = { t: Math.round((Date.now() - t0) / 1000), rssMB: Math.round(r.server.rssBytes / 2 ** 20), fds: r.server.fds, handles: r.server.handles, lagMaxMs: r.eventLoopLagMs.max, errors: r.errors, generatePerS: r.routes.generate.perSecond, healthP99Ms: r.routes.health.p99Ms };
    samples.push(s);
    slices.push(r);
    say(`  t=${s.t}s rss ${s.rssMB} MB, fds ${s.fds}, handles ${s.handles}, lag max ${s.lagMaxMs} ms, errors ${s.errors}, /generate ${s.generatePerS}/s, /health p99 ${s.healthP99Ms} ms`);
    slice++;
  }
  // Traffic stopped: the fds and handles left now are the service's own, not the clients'.
  await new Promise((r) => setTimeout(r, 1000));
  const idle = (await call(svc.url, 'GET', '/stats')).body;
  const half = samples.slice(Math.floor(samples.length / 2));
  const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const mid = med(samples.slice(Math.max(0, Math.floor(samples.length / 2) - 1), Math.floor(samples.length / 2) + 2).map((s) => s.rssMB));
  const end = med(samples.slice(-3).map((s) => s.rssMB));
  // The least-squares slope over the last half too: less sensitive to one sample than the medians.
  const xs = half.map((x) => x.t);
  const ys = half.map((x) => x.rssMB);
  const mean = (v) => v.reduce((a, b) => a + b, 0) / v.length;
  const [mx, my] = [mean(xs), mean(ys)];
  const slope = xs.length > 1 ? xs.reduce((a, x, i) => a + (x - mx) * (ys[i] - my), 0) / (xs.reduce((a, x) => a + (x - mx) ** 2, 0) || 1) : 0;
  const jobs = [];
  for (const j of shortJobs) jobs.push({ ...j, state: (await call(svc.url, 'GET', `/jobs/${j.id}`)).body.state, ...checkRunFiles(j.out) });
  const sum = (k) => slices.reduce((s, r) => s + r.routes[k].requests, 0);
  return {
    seconds: Math.round((Date.now() - t0) / 1000),
    samples,
    rss: { firstMB: samples[0].rssMB, midMB: mid, endMB: end, maxMB: Math.max(...samples.map((s) => s.rssMB)), lastHalfGrowth: (end - mid) / mid, lastHalfTrend: (slope * (xs[xs.length - 1] - xs[0])) / my, slopeMBPerMin: slope * 60, lastHalfMaxMB: Math.max(...half.map((s) => s.rssMB)) },
    fds: { idleAtStart: idle0.fds, first: samples[0].fds, max: Math.max(...samples.map((s) => s.fds)), idleAtEnd: idle.fds },
    handles: { idleAtStart: idle0.handles, idleAtEnd: idle.handles },
    requests: { generate: sum('generate'), loss: sum('loss'), health: sum('health') },
    trainingSteps: slices.reduce((n, r) => n + r.training.steps, 0),
    errors: slices.reduce((s, r) => s + r.errors, 0),
    healthP99MsWorst: Math.max(...slices.map((r) => r.routes.health.p99Ms)),
    lagMaxMsWorst: Math.max(...slices.map((r) => r.eventLoopLagMs.max)),
    shortJobs: jobs.map((j) => ({ id: j.id, state: j.state, problems: j.problems })),
  };
}

function formatSoak(s) {
  const every = Math.max(1, Math.round(s.samples.length / 10));
  const curve = s.samples.filter((_, i) => i % every === 0 || i === s.samples.length - 1).map((x) => `${x.t}s ${x.rssMB}`).join(', ');
  return [
    `soak: ${s.seconds} s; requests /generate ${s.requests.generate}, /loss ${s.requests.loss}, /health ${s.requests.health}; errors ${s.errors}; the long job trained ${s.trainingSteps} steps meanwhile`,
    `  RSS (MB) every 10 s, thinned: ${curve}`,
    `  RSS first ${s.rss.firstMB} MB, at half time ${s.rss.midMB} MB, at the end ${s.rss.endMB} MB (medians of 3 samples), max ${s.rss.maxMB} MB: growth over the last half ${(s.rss.lastHalfGrowth * 100).toFixed(1)}% (least-squares trend ${(s.rss.lastHalfTrend * 100).toFixed(1)}%, ${s.rss.slopeMBPerMin.toFixed(2)} MB/min)`,
    `  open fds: idle before the traffic ${s.fds.idleAtStart}, under traffic ${s.fds.first} at first and ${s.fds.max} at most, idle at the end ${s.fds.idleAtEnd}; active handles idle ${s.handles.idleAtStart} before, ${s.handles.idleAtEnd} at the end`,
    `  worst /health p99 over 10 s slices ${s.healthP99MsWorst} ms; worst event-loop lag ${s.lagMaxMsWorst} ms`,
    `  short jobs: ${s.shortJobs.map((j) => `${j.id} ${j.state}${j.problems.length ? ` (${j.problems.join('; ')})` : ''}`).join(', ')}`,
  ].join('\n');
}

function machine() {
  let cpu = '';
  try {
    cpu = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
  } catch {
    // not Linux
  }
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  return { cpus: `${availableParallelism()} CPUs ${cpu}`.trim(), load };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  mkdirSync(tmpdir(), { recursive: true });
  process.exitCode = await main();
}
