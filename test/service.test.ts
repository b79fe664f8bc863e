// examples/service under load (issue 15): the service as a deploy runs it (server.js in its own
// process), a training job in it, and autocannon driving /generate, /loss and /health on loopback.
// Then faults while that traffic runs: clients that leave mid-request, malformed bodies, a job whose
// data has a bad line; and SIGTERM in the middle of a checkpoint write. Bounded: a few seconds of
// traffic each, tiny models.
import { watch } from 'node:fs';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error: a plain-JS example, no declarations
import { call, checkRunFiles, formatMix, jobBody, makeData, runMix, startService, waitJob } from '../examples/service/load.js';
import { Model } from '../lib/index.js';

type Service = { url: string; child: import('node:child_process').ChildProcess; log: string[]; exited: Promise<{ code: number | null; signal: string | null }> };

const work = mkdtempSync(path.join(tmpdir(), 'tdpo-service-test-'));
const data = makeData(path.join(work, 'data'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until<T>(what: string, f: () => Promise<T | null | undefined | false>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
/** Reads GET /jobs/:id/events into `text` until the stream ends or `close()`. */
function events(url: string, id: string) {
  const abort = new AbortController();
  const out = { text: '', ended: null as Promise<void> | null, close: () => abort.abort() };
  out.ended = (async () => {
    const res = await fetch(`${url}/jobs/${id}/events`, { signal: abort.signal });
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) out.text += decoder.decode(chunk, { stream: true });
    } catch (err) {
      if ((err as Error).name !== 'AbortError') throw err;
    }
  })();
  return out;
}
const stats = async (url: string) => (await call(url, 'GET', '/stats')).body as { fds: number; inflight: number; reservedBytes: number; handles: number };

describe('the service under load, with a training job in the same process', () => {
  let svc: Service;
  const out = path.join(work, 'run');
  let job: string;
  let idleFds: number;

  beforeAll(async () => {
    svc = await startService(['--threads', '2', '--max-jobs', '2']);
    idleFds = (await stats(svc.url)).fds;
    const r = await call(svc.url, 'POST', '/jobs', jobBody(data, out, ['max_steps=100000', 'save_every=25']));
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    job = r.body.id;
    // Measure training, not its start-up (reading and tokenising the data runs on the event loop).
    await waitJob(svc.url, job, (j: { step: number }) => j.step >= 1);
  });

  afterAll(async () => {
    if (!svc) return;
    const stream = events(svc.url, job);
    const del = await call(svc.url, 'DELETE', `/jobs/${job}`);
    expect([del.status, del.body.state]).toEqual([202, 'stopping']);
    const ended = await waitJob(svc.url, job, (j: { state: string }) => !['running', 'stopping'].includes(j.state));
    expect(ended.state).toBe('stopped');
    await stream.ended; // the server ends the stream with the job
    expect(stream.text).toMatch(/event: end\ndata: \{"id":"1","state":"stopped"/);
    svc.child.kill('SIGTERM');
    expect((await svc.exited).code).toBe(0);
    const files = checkRunFiles(out);
    expect(files.problems).toEqual([]);
    expect(files.metricsSteps).toBe(ended.step);
  });

  // One retry: on the shared 2-core VM other jobs can starve the whole process for a while (the
  // profile of such stalls shows no JavaScript running: the thread was not scheduled).
  it('serves /generate and /loss while training: no errors, /health p99 under 50 ms', { retry: 1 }, async () => {
    const stream = events(svc.url, job);
    const r = await runMix(svc.url, 5, {}, job);
    stream.close();
    console.log(formatMix(r));
    // Every optimizer step reached the subscriber as a metrics event.
    const steps = [...stream.text.matchAll(/event: metrics\ndata: (.*)\n/g)].map((m) => JSON.parse(m[1])).filter((m) => 'loss' in m);
    expect(steps.length).toBeGreaterThanOrEqual(r.training.steps);
    expect(r.errors).toBe(0);
    expect(r.routes.generate.requests).toBeGreaterThan(5);
    expect(r.routes.loss.requests).toBeGreaterThan(5);
    expect(r.routes.health.p99Ms).toBeLessThan(50);
    expect(r.training.steps).toBeGreaterThan(0); // the job trained through it
  });

  it('refuses past its budget instead of queueing: 429 past the in-flight limit, 503 past the memory budget', async () => {
    const burst = async (n: number, body: unknown) => {
      const rs = await Promise.all(Array.from({ length: n }, () => fetch(`${svc.url}/generate`, { method: 'POST', body: JSON.stringify(body) })));
      return Promise.all(rs.map(async (r) => ({ status: r.status, retryAfter: r.headers.get('retry-after'), code: r.ok ? null : ((await r.json()) as { error: { code: string } }).error.code })));
    };
    // 24 at once against --max-inflight 16 (the model runs them one at a time).
    const many = await burst(24, { prompt: 'hi', options: { maxNewTokens: 8 } });
    const busy = many.filter((r) => r.status === 429);
    expect(busy.length).toBeGreaterThan(0);
    expect(busy.every((r) => r.code === 'ERR_SERVICE_BUSY' && r.retryAfter === '1')).toBe(true);
    expect(many.filter((r) => r.status === 200).length).toBe(24 - busy.length);
    // 14 at once, each reserving ~51 MB of logits (250 positions x 50257 x 4 bytes), against --memory-mb 512.
    const big = await burst(14, { prompt_ids: Array.from({ length: 250 }, (_, i) => 100 + i), options: { maxNewTokens: 1 } });
    const full = big.filter((r) => r.status === 503);
    expect(full.length).toBeGreaterThan(0);
    expect(full.every((r) => r.code === 'ERR_SERVICE_MEMORY')).toBe(true);
    expect(big.filter((r) => r.status === 200).length).toBe(14 - full.length);
    await until('the reservations to be released', async () => {
      const s = await stats(svc.url);
      return s.inflight === 0 && s.reservedBytes === 0;
    });
  });

  it('a client that disconnects mid-request: its slot and socket are released, the service keeps serving', async () => {
    const port = Number(new URL(svc.url).port);
    const background = runMix(svc.url, 2);
    const body = JSON.stringify({ prompt: 'a long answer', options: { maxNewTokens: 100 } });
    const leave = (text: string, afterMs: number) =>
      new Promise<void>((resolve) => {
        const s = connect(port, '127.0.0.1', () => {
          s.write(text);
          setTimeout(() => (s.destroy(), resolve()), afterMs);
        });
      });
    await Promise.all([
      // Mid-body: 100 bytes promised, 11 sent.
      ...Array.from({ length: 3 }, () => leave('POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"prompt":', 30)),
      // Whole request sent, gone before the answer (the generation runs on, unanswered).
      ...Array.from({ length: 3 }, () => leave(`POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 20)),
    ]);
    const bg = await background;
    expect(bg.errors).toBe(0);
    await until('the abandoned requests to finish', async () => {
      const s = await stats(svc.url);
      return s.inflight === 0 && s.reservedBytes === 0 && s;
    });
    // The server-side sockets are closed again (the job's own files are opened and closed per write).
    await until('the fds to come back', async () => (await stats(svc.url)).fds <= idleFds + 1);
    expect((await call(svc.url, 'GET', '/health')).status).toBe(200);
    expect(svc.log.filter((l) => / \/generate: /.test(l))).toEqual([]); // nothing logged as a 500
  });

  it('malformed bodies and options: 400 (413 when too large) with the code and message, and traffic unharmed', async () => {
    const background = runMix(svc.url, 2);
    const cases: Array<[string, string, unknown, number, string, RegExp]> = [
      ['POST', '/generate', '{"prompt": "unterminated', 400, 'ERR_SERVICE_JSON', /not valid JSON/],
      ['POST', '/generate', '[1, 2]', 400, 'ERR_SERVICE_JSON', /JSON object/],
      ['POST', '/generate', { prompt: 5 }, 400, 'ERR_SERVICE_FIELD', /prompt must be a string/],
      ['POST', '/generate', { prompt: 'hi', options: { temperatur: 1 } }, 400, 'ERR_TDPO_OPTION', /did you mean 'temperature'/],
      ['POST', '/generate', { prompt: 'hi', options: { temperature: -1 } }, 400, 'ERR_TDPO_OPTION', /temperature/],
      ['POST', '/generate', { prompt_ids: [1, 99999999] }, 400, 'ERR_SERVICE_FIELD', /token ids/],
      ['POST', '/generate', { prompt: 'x'.repeat(2 << 20) }, 413, 'ERR_SERVICE_TOO_LARGE', /over \d+ bytes/],
      ['POST', '/loss', { prompt: 'a', chosen: 'b', rejected: 'c', options: { beta: -1 } }, 400, 'ERR_TDPO_OPTION', /beta/],
      ['POST', '/loss', { prompt: 'a', chosen: 'b', rejected: 'c', options: { loss: 'dpo2' } }, 400, 'ERR_TDPO_OPTION', /'tdpo2'/],
      ['POST', '/logprobs', { prompt: 'a' }, 400, 'ERR_SERVICE_FIELD', /completion must be a string/],
      ['POST', '/jobs', { overrides: 'lr=1' }, 400, 'ERR_SERVICE_FIELD', /overrides must be an array/],
      ['POST', '/jobs', { ...jobBody(data, path.join(work, 'typo')), overrides: ['batch_sise=4'] }, 400, 'ERR_TDPO_CONFIG', /did you mean 'batch_size'/],
      ['POST', '/jobs', jobBody(data, out), 409, 'ERR_TDPO_LOCKED', /in use by job/],
      ['GET', '/jobs/nope', undefined, 404, 'ERR_SERVICE_NOT_FOUND', /no job/],
    ];
    for (const [method, route, body, status, code, message] of cases) {
      const r = await call(svc.url, method, route, body);
      expect({ route, status: r.status, code: r.body?.error?.code }).toEqual({ route, status, code });
      expect(r.body.error.message).toMatch(message);
    }
    expect((await background).errors).toBe(0);
  });

  it('a job whose data file has a bad line fails with ERR_TDPO_DATA naming file:line; the service keeps serving', async () => {
    const lines = readFileSync(data.train, 'utf8').split('\n');
    lines[6] = '{"prompt_ids": [5, 6], "chosen_ids": "oops", "rejected_ids": [7]}';
    const bad = path.join(work, 'bad.jsonl');
    writeFileSync(bad, lines.join('\n'));
    const background = runMix(svc.url, 2);
    const r = await call(svc.url, 'POST', '/jobs', jobBody({ train: bad, eval: data.eval }, path.join(work, 'bad-run')));
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const failed = await waitJob(svc.url, r.body.id, (j: { state: string }) => j.state !== 'running');
    expect(failed.state).toBe('failed');
    expect(failed.error.code).toBe('ERR_TDPO_DATA');
    expect(failed.error.message).toContain(`${bad}:7`);
    expect((await background).errors).toBe(0);
    expect((await call(svc.url, 'GET', `/jobs/${job}`)).body.state).toBe('running');
    expect(existsSync(path.join(work, 'bad-run', '.lock'))).toBe(false);
  });
});

describe('the load generator', () => {
  it('is a dev dependency: a service installing tdpo does not get autocannon', () => {
    const pkg = JSON.parse(readFileSync(path.resolve(__dirname, '..', 'package.json'), 'utf8'));
    expect(pkg.dependencies.autocannon).toBeUndefined();
    expect(pkg.devDependencies.autocannon).toBeDefined();
  });
});

describe('SIGTERM during a checkpoint write', () => {
  let svc: Service | undefined;
  afterAll(async () => {
    // Only when the test failed before the service exited: never leave it running.
    if (svc && svc.child.exitCode === null && svc.child.signalCode === null) {
      svc.child.kill('SIGKILL');
      await svc.exited;
    }
  });

  it('finishes the in-flight request and the write, checkpoints the job, exits 0, leaves nothing half-written', async () => {
    svc = (await startService(['--threads', '2'])) as Service;
    const out = path.join(work, 'sigterm');
    // A larger model (still small) so that each checkpoint takes a while to write, every step.
    const overrides = ['max_steps=100000', 'save_every=1', 'eval_every=0', 'batch_size=8', 'gradient_accumulation_steps=1', 'model.n_embd=256', 'model.n_layer=4'];
    const r = await call(svc.url, 'POST', '/jobs', jobBody(data, out, overrides));
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    await waitJob(svc.url, r.body.id, (j: { step: number }) => j.step >= 2);

    // 200 new tokens: a second or so of work, well inside the tiny model's 256 positions.
    const generation = call(svc.url, 'POST', '/generate', { prompt: 'in flight', options: { maxNewTokens: 200 } });
    await until('the generation to be in flight', async () => (await call(svc.url, 'GET', '/health')).body.inflight >= 1);
    // Signal the moment a save's temporary folder appears, i.e. while that checkpoint is written.
    const duringWrite = await new Promise<boolean>((resolve) => {
      const w = watch(out, (_event, name) => {
        if (!name || !/^\.step-\d+\.tmp-/.test(name) || !existsSync(path.join(out, name))) return;
        w.close();
        svc!.child.kill('SIGTERM');
        resolve(existsSync(path.join(out, name)));
      });
    });
    expect(duringWrite).toBe(true);
    const g = await generation;
    expect(g.status).toBe(200);
    expect(g.body.tokens.length).toBeGreaterThan(0);
    const exit = await svc.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(svc.log.join('\n')).toMatch(/job 1: stopped at step (\d+); checkpoint/);

    const files = checkRunFiles(out);
    expect(files.problems).toEqual([]); // no .tmp/.old folder, no .lock, every step-N/ complete
    const last = files.checkpoints[files.checkpoints.length - 1];
    expect(last).toBe(files.metricsSteps);
    expect(JSON.parse(readFileSync(path.join(out, `step-${last}`, 'trainer.json'), 'utf8')).step).toBe(last);
    const m = await Model.load(path.join(out, `step-${last}`));
    expect(m.config.n_embd).toBe(256);
    m.dispose();
  });
});
