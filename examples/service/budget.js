// Admission control and the process's vital signs. Every limit here refuses at once (429 or 503)
// instead of queueing: a service that queues without bound under overload answers nothing in time
// and then runs out of memory, while an early refusal lets the client back off or go elsewhere.
import { readdirSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';

export class ServiceError extends Error {
  /** `status` is the HTTP status; `code` goes to the client with the message. */
  constructor(status, code, message, headers = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

export class Budget {
  /**
   * @param {object} o
   * @param {number} o.maxInflight   model requests (generate, logprobs, loss) running or waiting for the model
   * @param {number} o.memoryBytes   working memory that those requests may hold together (estimated per request)
   * @param {number} o.maxRssBytes   no new work above this resident size (jobs included)
   */
  constructor({ maxInflight, memoryBytes, maxRssBytes }) {
    this.maxInflight = maxInflight;
    this.memoryBytes = memoryBytes;
    this.maxRssBytes = maxRssBytes;
    this.inflight = 0;
    this.reserved = 0;
    this.refused = { concurrency: 0, memory: 0 };
    // 10 ms resolution is the coarsest that still sees the lags a client would notice.
    this.loop = monitorEventLoopDelay({ resolution: 10 });
    this.loop.enable();
  }

  /** Throws 503 when the process is already over its resident-memory ceiling. */
  checkRss() {
    const rss = process.memoryUsage.rss();
    if (rss > this.maxRssBytes) {
      this.refused.memory++;
      throw new ServiceError(503, 'ERR_SERVICE_MEMORY', `the service holds ${mb(rss)} MB, over its ${mb(this.maxRssBytes)} MB budget; retry later`, { 'retry-after': '5' });
    }
  }

  /**
   * Takes a slot and `bytes` of the memory budget for one model request, or throws (413 if it could
   * never fit, 429/503 if it does not fit now). Returns the release function; call it exactly once.
   */
  acquire(bytes) {
    if (bytes > this.memoryBytes) {
      throw new ServiceError(413, 'ERR_SERVICE_TOO_LARGE', `this request needs about ${mb(bytes)} MB, more than the service's ${mb(this.memoryBytes)} MB per-request budget; send less text or fewer tokens`);
    }
    if (this.inflight >= this.maxInflight) {
      this.refused.concurrency++;
      throw new ServiceError(429, 'ERR_SERVICE_BUSY', `${this.inflight} model requests are in flight, the service's limit; retry later`, { 'retry-after': '1' });
    }
    if (this.reserved + bytes > this.memoryBytes) {
      this.refused.memory++;
      throw new ServiceError(503, 'ERR_SERVICE_MEMORY', `in-flight requests hold ${mb(this.reserved)} of ${mb(this.memoryBytes)} MB; this one needs ${mb(bytes)} MB; retry later`, { 'retry-after': '1' });
    }
    this.checkRss();
    this.inflight++;
    this.reserved += bytes;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.inflight--;
      this.reserved -= bytes;
    };
  }

  /** `fn()` holding a slot and `bytes` of the budget (acquire), released however it ends. */
  async run(bytes, fn) {
    const release = this.acquire(bytes);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Vital signs; the event-loop figures cover the time since the previous call (a scrape interval). */
  stats() {
    const h = this.loop;
    // The histogram counts the timer's own period in every sample: subtract it so that 0 means no lag.
    const ms = (ns) => (h.count ? Math.round(Math.max(0, ns - 10e6) / 1e4) / 100 : 0);
    const out = {
      rssBytes: process.memoryUsage.rss(),
      fds: openFds(),
      handles: process.getActiveResourcesInfo().length,
      inflight: this.inflight,
      reservedBytes: this.reserved,
      refused: { ...this.refused },
      eventLoopLagMs: { max: ms(h.max), p99: ms(h.percentile(99)), mean: ms(h.mean) },
    };
    h.reset();
    return out;
  }
}

/** Open file descriptors of this process (Linux; -1 elsewhere). */
function openFds() {
  try {
    return readdirSync('/proc/self/fd').length - 1; // the listing's own descriptor
  } catch {
    return -1;
  }
}

const mb = (bytes) => Math.round(bytes / 2 ** 20);
