// Training jobs inside the service's process: train() from tdpo, one AbortController each, and the
// metrics fanned out to server-sent-event subscribers. The library's own lock already keeps two
// trainings out of one output_dir (across processes too); the check here answers that case with a
// 409 before any work starts.
import path from 'node:path';
import { loadConfig, train } from 'tdpo';
import { ServiceError } from './budget.js';

// Finished jobs are kept for GET /jobs/:id, but only this many: a long-lived service must not grow.
const KEEP_FINISHED = 50;
// A subscriber that has this much unsent output is too slow to follow; it is dropped, not buffered.
const MAX_SSE_BACKLOG = 1 << 20;

export class Jobs {
  /** @param {{ maxJobs: number, budget: import('./budget.js').Budget, log: (line: string) => void }} o */
  constructor({ maxJobs, budget, log }) {
    this.maxJobs = maxJobs;
    this.budget = budget;
    this.log = log;
    this.jobs = new Map();
    this.nextId = 1;
  }

  get running() {
    return [...this.jobs.values()].filter((j) => !j.ended);
  }

  /**
   * Starts a job from `{ config, file, overrides, resume, overwrite }` (config: an inline config
   * mapping; file: a YAML/JSON config on the server; overrides: `key=value` strings, as --set).
   * Resolves once train() got past its synchronous checks (lock, earlier-run refusal, resume config),
   * so those come back as the request's own 4xx; later failures (data, models) end the job as failed.
   */
  async start(body) {
    const { config = {}, file = null, overrides = [], resume = false, overwrite = false, ...rest } = body;
    const unknown = Object.keys(rest);
    if (unknown.length) throw new ServiceError(400, 'ERR_SERVICE_FIELD', `unknown field '${unknown[0]}' (a job takes config, file, overrides, resume, overwrite)`);
    if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new ServiceError(400, 'ERR_SERVICE_FIELD', 'config must be a mapping of config keys');
    if (file !== null && typeof file !== 'string') throw new ServiceError(400, 'ERR_SERVICE_FIELD', 'file must be a path string');
    if (!Array.isArray(overrides) || overrides.some((o) => typeof o !== 'string')) throw new ServiceError(400, 'ERR_SERVICE_FIELD', "overrides must be an array of 'key=value' strings, as --set takes");
    if (typeof resume !== 'boolean' || typeof overwrite !== 'boolean') throw new ServiceError(400, 'ERR_SERVICE_FIELD', 'resume and overwrite must be true or false');

    const c = loadConfig(file, overrides, config); // ERR_TDPO_CONFIG -> 400, with the key named
    // setNumThreads is process-wide: a job must not change the threads of the requests being served.
    if (c.threads !== null) throw new ServiceError(400, 'ERR_SERVICE_FIELD', 'threads is process-wide in a service: start the service with --threads instead');
    const outputDir = path.resolve(c.output_dir);
    const holder = this.running.find((j) => j.outputDir === outputDir);
    if (holder) throw new ServiceError(409, 'ERR_TDPO_LOCKED', `${c.output_dir} is in use by job ${holder.id}; stop it (DELETE /jobs/${holder.id}) or use another output_dir`);
    if (this.running.length >= this.maxJobs) {
      throw new ServiceError(429, 'ERR_SERVICE_BUSY', `${this.running.length} training job(s) running, the service's limit; retry when one ends`, { 'retry-after': '10' });
    }
    this.budget.checkRss();

    const job = {
      id: String(this.nextId++),
      state: 'running',
      outputDir,
      startedAt: new Date().toISOString(),
      endedAt: null,
      step: 0,
      lastMetrics: null,
      lastEval: null,
      result: null,
      error: null,
      ended: false,
      abort: new AbortController(),
      subscribers: new Set(),
      done: null,
    };
    const promise = train(c, {
      resume,
      overwrite,
      signal: job.abort.signal,
      log: (line) => this.log(`job ${job.id}: ${line}`),
      onStep: (m) => this.#onStep(job, m),
    });
    job.done = promise.then(
      (r) => this.#end(job, r.stopped ? 'stopped' : 'completed', { result: { steps: r.steps, examples: r.examples, outputDir: r.outputDir, stopped: r.stopped, alreadyComplete: r.alreadyComplete } }),
      (err) => this.#end(job, 'failed', { error: { code: err.code ?? 'ERR_SERVICE_INTERNAL', message: err.message } }),
    );
    // train() runs its refusals (lock, an earlier run in output_dir, a resume config mismatch)
    // before its first await; one turn of the event loop settles them.
    const early = await Promise.race([promise.then(() => null, (e) => e), new Promise((r) => setImmediate(() => r(null)))]);
    if (early) {
      this.jobs.delete(job.id);
      throw early;
    }
    this.jobs.set(job.id, job);
    this.#prune();
    this.log(`job ${job.id}: started into ${c.output_dir}`);
    return job;
  }

  get(id) {
    const job = this.jobs.get(id);
    if (!job) throw new ServiceError(404, 'ERR_SERVICE_NOT_FOUND', `no job ${id}`);
    return job;
  }

  /** Stops at the next step boundary; train() writes a checkpoint first. */
  stop(id) {
    const job = this.get(id);
    if (!job.ended) {
      job.state = 'stopping';
      job.abort.abort();
      this.#broadcast(job, 'state', view(job));
    }
    return job;
  }

  /** Stops every running job and waits until each has written its checkpoint. */
  async stopAll() {
    const running = this.running;
    for (const j of running) this.stop(j.id);
    await Promise.all(running.map((j) => j.done));
  }

  /** Streams a job's metrics as server-sent events until it ends (or the client leaves). */
  subscribe(job, res) {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    send(res, 'state', view(job));
    if (job.ended) return void res.end();
    job.subscribers.add(res);
    res.on('close', () => job.subscribers.delete(res));
  }

  #onStep(job, m) {
    if (typeof m.loss === 'number') {
      job.step = m.step;
      job.lastMetrics = m;
    } else {
      job.lastEval = m;
    }
    this.#broadcast(job, 'metrics', m);
  }

  #end(job, state, fields) {
    if (!this.jobs.has(job.id)) return; // refused at the start: the request's own error said it all
    Object.assign(job, fields, { state, ended: true, endedAt: new Date().toISOString() });
    this.log(`job ${job.id}: ${state}${job.error ? ` (${job.error.code}: ${job.error.message})` : ''}`);
    this.#broadcast(job, 'end', view(job));
    for (const res of job.subscribers) res.end();
    job.subscribers.clear();
    this.#prune();
  }

  #broadcast(job, event, data) {
    for (const res of job.subscribers) {
      if (res.writableLength > MAX_SSE_BACKLOG) {
        job.subscribers.delete(res);
        res.destroy();
        continue;
      }
      send(res, event, data);
    }
  }

  #prune() {
    const finished = [...this.jobs.values()].filter((j) => j.ended);
    for (const j of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED))) this.jobs.delete(j.id);
  }
}

const send = (res, event, data) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);

/** What GET /jobs/:id shows. */
export function view(job) {
  const { id, state, outputDir, startedAt, endedAt, step, lastMetrics, lastEval, result, error } = job;
  return { id, state, outputDir, startedAt, endedAt, step, lastMetrics, lastEval, result, error };
}
