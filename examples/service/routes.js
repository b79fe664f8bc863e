// The HTTP routes. Each handler validates its body, takes its share of the budget, calls tdpo and
// answers JSON; tdpo's coded errors become 4xx/5xx answers carrying the library's own message.
import { TrainStep, collatePairs, tokenizePair } from 'tdpo';
import { ServiceError } from './budget.js';
import { view } from './jobs.js';

// tdpo's error codes that mean "the request was wrong": the client can fix them, so 400.
const CLIENT_CODES = new Set(['ERR_TDPO_OPTION', 'ERR_TDPO_TYPE', 'ERR_TDPO_INPUT', 'ERR_TDPO_CONFIG', 'ERR_TDPO_SHAPE', 'ERR_TDPO_LABEL', 'ERR_TDPO_LOGITS', 'ERR_TDPO_TOKENIZER', 'ERR_TDPO_DATA', 'ERR_TDPO_RESUME']);
const STATUS_OF = { ERR_TDPO_LOCKED: 409, ERR_TDPO_OUT_OF_MEMORY: 503 };

/**
 * @param {object} ctx
 * @param {import('tdpo').Model} ctx.model       the served policy
 * @param {import('tdpo').Model} ctx.reference   the reference for /loss (the policy itself unless given)
 * @param {import('tdpo').Tokenizer} ctx.tokenizer
 * @param {import('./budget.js').Budget} ctx.budget
 * @param {import('./jobs.js').Jobs} ctx.jobs
 * @param {{ maxBodyBytes: number, maxNewTokens: number }} ctx.limits
 */
export function createHandler(ctx) {
  const { model, reference, tokenizer, budget, jobs, limits } = ctx;
  const vocab = Number(model.config.vocab_size);
  const positions = Number(model.config.n_positions ?? model.config.max_position_embeddings);
  // Each request reserves what its largest buffers need: logits are [rows, T, V] float32.
  const logitBytes = (rows, T) => rows * T * vocab * 4;

  // /loss scores through TrainStep.evaluate rather than forward() + tdpoLoss(): the same fused loss,
  // but the [2, T, V] logits of both models stay native. Through JS they were ~10 MB of external
  // memory per request, and the old-space GCs that memory forced stalled the event loop.
  // One TrainStep per loss setting, the few most recent kept (each is small: no optimizer state
  // until a step, which this one never takes).
  const scorers = new Map();
  const scorer = (o) => {
    const key = JSON.stringify([o.loss, o.beta, o.alpha]);
    let s = scorers.get(key);
    if (!s) {
      s = TrainStep.create(model, { ...o, reference });
      s.catch(() => scorers.delete(key)); // a refused setting (ERR_TDPO_OPTION) is not kept
      scorers.set(key, s);
      if (scorers.size > 8) scorers.delete(scorers.keys().next().value);
    }
    return s;
  };

  const routes = {
    // 503 while draining, so that a balancer's readiness probe takes this instance out of rotation.
    'GET /health': async (req, res) => {
      if (ctx.draining) res.statusCode = 503;
      return { status: ctx.draining ? 'draining' : 'ok', uptimeS: Math.round(process.uptime()), jobs: jobs.running.length, inflight: budget.inflight };
    },
    'GET /stats': async () => budget.stats(),

    'POST /generate': async (req) => {
      const body = await readJson(req, limits.maxBodyBytes);
      const prompt = textOrIds(body, 'prompt', tokenizer, vocab);
      if (prompt.length === 0) throw field('prompt must hold at least one token');
      const options = object(body.options ?? {}, 'options');
      const maxNew = options.maxNewTokens ?? 32;
      if (Number.isInteger(maxNew) && maxNew > limits.maxNewTokens) throw field(`options.maxNewTokens is ${maxNew}, over this service's limit of ${limits.maxNewTokens}`);
      // At most a row of logits per position (the prefill's, then one per step) and the KV cache,
      // which is small next to them.
      return budget.run(logitBytes(1, prompt.length + maxNew) + 2 ** 20, async () => {
        const eos = tokenizer?.eosTokenId ?? model.config.eos_token_id;
        const [out] = await model.generate([Int32Array.from(prompt)], { ...(Number.isInteger(eos) ? { eosTokenId: eos } : {}), ...options });
        const ids = Array.from(out);
        return { tokens: ids, text: tokenizer ? tokenizer.decode(ids, { skipUnknown: true }) : null };
      });
    },

    'POST /logprobs': async (req) => {
      const body = await readJson(req, limits.maxBodyBytes);
      const prompt = textOrIds(body, 'prompt', tokenizer, vocab);
      const completion = textOrIds(body, 'completion', tokenizer, vocab);
      if (prompt.length === 0 || completion.length === 0) throw field('prompt and completion must each hold at least one token');
      const ids = [...prompt, ...completion];
      const T = ids.length;
      if (T > positions) throw field(`prompt + completion is ${T} tokens, more than the model's ${positions} positions`);
      // Aligned labels: the logits at t score the token at t + 1; only the completion is scored.
      const labels = new Int32Array(T).fill(-100);
      for (let t = prompt.length - 1; t < T - 1; t++) labels[t] = ids[t + 1];
      return budget.run(logitBytes(1, T) * 2, async () => {
        const r = await model.sequenceLogprobs(Int32Array.from(ids), [1, T], labels);
        return { tokens: completion, logprobs: Array.from(r.tokenLogprobs.subarray(prompt.length - 1, T - 1)), sum: r.sums[0] };
      });
    },

    'POST /loss': async (req) => {
      const body = await readJson(req, limits.maxBodyBytes);
      const prompt = textOrIds(body, 'prompt', tokenizer, vocab);
      const chosen = textOrIds(body, 'chosen', tokenizer, vocab);
      const rejected = textOrIds(body, 'rejected', tokenizer, vocab);
      const options = object(body.options ?? {}, 'options');
      for (const k of Object.keys(options)) if (!['loss', 'beta', 'alpha'].includes(k)) throw field(`options.${k} is not a /loss option (loss, beta, alpha)`);
      if (options.loss === 'sft') throw field("options.loss 'sft' scores no pair: use tdpo2, tdpo1 or dpo");
      const eos = tokenizer?.eosTokenId ?? model.config.eos_token_id;
      if (!Number.isInteger(eos)) throw field('this model names no end-of-text token (eos_token_id in its config.json), which /loss appends to each response');
      // The official tokenisation (EOS after each response, labels only on the responses).
      const pair = tokenizePair(prompt, chosen, rejected, eos, { maxLength: positions, maxPromptLength: Math.floor(positions / 2), truncationMode: 'keep_end' });
      const batch = collatePairs([pair]);
      const [B, T] = batch.shape;
      return budget.run(logitBytes(B, T) * 2, async () => {
        const s = await (await scorer(options)).evaluate(batch);
        return { loss: s.loss, chosenReward: s.chosenRewards[0], rejectedReward: s.rejectedRewards[0], chosenKl: s.chosenKl[0], rejectedKl: s.rejectedKl[0], chosenLogps: s.chosenLogps[0], rejectedLogps: s.rejectedLogps[0] };
      });
    },

    'POST /jobs': async (req, res) => {
      const job = await jobs.start(await readJson(req, limits.maxBodyBytes));
      res.statusCode = 202;
      return view(job);
    },
    'GET /jobs': async () => ({ jobs: [...jobs.jobs.values()].map(view) }),
    'GET /jobs/:id': async (req, res, id) => view(jobs.get(id)),
    'DELETE /jobs/:id': async (req, res, id) => {
      res.statusCode = 202;
      return view(jobs.stop(id));
    },
    'GET /jobs/:id/events': async (req, res, id) => {
      jobs.subscribe(jobs.get(id), res);
      return undefined; // the stream answers
    },
  };

  return async function handle(req, res) {
    // Decided when answering, not when the request came: one that began before SIGTERM must not
    // leave a keep-alive connection open behind it, or the drain would wait for the client.
    const answer = (status, body, headers) => reply(res, status, body, ctx.draining ? { ...headers, connection: 'close' } : headers);
    try {
      const [route, id] = match(req.method, new URL(req.url, 'http://x').pathname);
      const handler = routes[route];
      if (!handler) throw new ServiceError(404, 'ERR_SERVICE_NOT_FOUND', `no route ${req.method} ${req.url}`);
      // While draining, finish what is in flight and refuse the rest (a balancer retries elsewhere).
      if (ctx.draining && route !== 'GET /health') throw new ServiceError(503, 'ERR_SERVICE_DRAINING', 'the service is shutting down', { 'retry-after': '1' });
      const result = await handler(req, res, id);
      if (result !== undefined) answer(res.statusCode || 200, result);
    } catch (err) {
      const status = err instanceof ServiceError ? err.status : CLIENT_CODES.has(err.code) ? 400 : STATUS_OF[err.code] ?? 500;
      if (status === 500) ctx.log(`${req.method} ${req.url}: ${err.stack ?? err}`);
      answer(status, { error: { code: err.code ?? 'ERR_SERVICE_INTERNAL', message: err.message } }, err.headers);
    }
  };
}

/** The route key and its :id, e.g. ['GET /jobs/:id/events', '3']. */
function match(method, pathname) {
  const m = /^\/jobs\/([^/]+)(\/events)?$/.exec(pathname);
  if (m) return [`${method} /jobs/:id${m[2] ?? ''}`, decodeURIComponent(m[1])];
  return [`${method} ${pathname}`, undefined];
}

function reply(res, status, body, headers = {}) {
  // The client may have gone (a disconnect mid-request): there is nobody to answer.
  if (res.destroyed || res.writableEnded) return;
  if (res.headersSent) return void res.end();
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** The request body as JSON, at most `limit` bytes; a client that leaves mid-body rejects it. */
function readJson(req, limit) {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (declared > limit) return reject(tooLarge(limit));
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        // Stop reading what is refused anyway; the 413 closes the connection behind it.
        req.removeAllListeners('data');
        req.pause();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        const value = JSON.parse(text);
        if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new SyntaxError('the body must be a JSON object');
        resolve(value);
      } catch (err) {
        reject(new ServiceError(400, 'ERR_SERVICE_JSON', `the body is not valid JSON: ${err.message}`));
      }
    });
    // A client that leaves mid-body: nobody to answer, but the handler must stop (and release).
    req.on('error', () => reject(new ServiceError(400, 'ERR_SERVICE_ABORTED', 'the client closed the connection mid-request')));
    req.on('close', () => {
      if (!req.complete) reject(new ServiceError(400, 'ERR_SERVICE_ABORTED', 'the client closed the connection mid-request'));
    });
  });
}

const tooLarge = (limit) => new ServiceError(413, 'ERR_SERVICE_TOO_LARGE', `the body is over ${limit} bytes`, { connection: 'close' });
const field = (message) => new ServiceError(400, 'ERR_SERVICE_FIELD', message);

function object(v, name) {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw field(`${name} must be an object`);
  return v;
}

/** body[name] as text (encoded with the tokenizer) or body[`${name}_ids`] as token ids. */
function textOrIds(body, name, tokenizer, vocab) {
  const ids = body[`${name}_ids`];
  if (ids !== undefined) {
    if (!Array.isArray(ids) || ids.some((x) => !Number.isInteger(x) || x < 0 || x >= vocab)) throw field(`${name}_ids must be an array of token ids in [0, ${vocab})`);
    return ids;
  }
  const text = body[name];
  if (typeof text !== 'string') throw field(`${name} must be a string (or ${name}_ids an array of token ids)`);
  if (!tokenizer) throw field(`this service has no tokenizer: send ${name}_ids`);
  return Array.from(tokenizer.encode(text));
}
