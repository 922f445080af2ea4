// The queue's numbers in the agent's /metrics: with a status token, the agent reads the
// Worker's GET /admin/queue (STATUS_TOKEN: counts only, never a message) when scraped, at
// most every 15 s, each read bounded to 5 s. A failed read keeps the last numbers, which
// mailbridge_queue_status_age_seconds then shows growing stale, and counts an error.
import { AdminShapeError, parseQueueSummary, type QueueSummaryRead } from '../../protocol/admin.ts';
import { STATES } from '../../protocol/queue.ts';
import type { Logger } from './log.ts';
import { Counter, Sampled, type Registry } from './prom.ts';

export const STATUS_MAX_AGE_MS = 15_000;
export const STATUS_TIMEOUT_MS = 5_000;

export interface QueueNumbers {
  states: Map<string, number>;
  /** receivedAt (ms) of the oldest message per state; null = none. */
  oldest: Map<string, number | null>;
  bouncesSent: number;
  /** Bytes stored per state (every byte, and those in R2); empty from a Worker older than them. */
  storedBytes: Map<string, number>;
  storedR2Bytes: Map<string, number>;
  /** Storage in use and the plan's limits by store ('object', 'r2'); empty from an older Worker. */
  storage: Map<string, number>;
  storageLimit: Map<string, number>;
}

/** https://host/admin/queue for wss://host/agent (http for ws, local runs). */
export function statusUrl(workerUrl: string): string {
  const u = new URL(workerUrl);
  u.protocol = u.protocol === 'ws:' ? 'http:' : 'https:';
  return new URL('/admin/queue', u).href;
}

/** The summary's numbers (protocol/admin.ts checks its shape), or null when it is not one. */
export function parseSummary(body: unknown): QueueNumbers | null {
  let b: QueueSummaryRead;
  try {
    b = parseQueueSummary(body);
  } catch (err) {
    if (err instanceof AdminShapeError) return null;
    throw err;
  }
  if (b.bouncesSent === null) return null;
  const out: QueueNumbers = {
    states: new Map(), oldest: new Map(), bouncesSent: b.bouncesSent,
    storedBytes: new Map(), storedR2Bytes: new Map(), storage: new Map(), storageLimit: new Map(),
  };
  for (const st of STATES) {
    out.states.set(st, b.states[st]);
    out.oldest.set(st, b.oldestByState?.[st] ?? null);
    const kept = b.stored?.[st];
    if (kept) {
      out.storedBytes.set(st, kept.bytes);
      out.storedR2Bytes.set(st, kept.r2Bytes);
    }
  }
  const u = b.storage;
  if (u) {
    out.storage.set('object', u.objectBytes).set('r2', u.r2Bytes);
    out.storageLimit.set('object', u.objectLimitBytes).set('r2', u.r2LimitBytes);
  }
  return out;
}

function hint(status: number): string | null {
  if (status === 401) return "the Worker refused the status token: check statusToken / statusTokenFile against the Worker's STATUS_TOKEN secret";
  if (status === 404) return 'no /admin here: the Worker has neither STATUS_TOKEN nor ADMIN_TOKEN set, or workerUrl is wrong';
  return null;
}

export class QueueStatus {
  readonly #url: string;
  readonly #token: string;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #fetch: typeof fetch;
  #numbers: QueueNumbers | null = null;
  #okAt: number | null = null;
  #triedAt = Number.NEGATIVE_INFINITY;
  #running: Promise<void> | null = null;
  #failing: string | null = null;
  readonly errors = new Counter('mailbridge_queue_scrape_errors_total',
    'Failed reads of the Worker\'s GET /admin/queue (timeout, refused token, bad answer); the queue numbers are then stale');

  constructor(o: { workerUrl: string; token: string; log: Logger; now?: () => number; fetch?: typeof fetch }) {
    this.#url = statusUrl(o.workerUrl);
    this.#token = o.token;
    this.#log = o.log;
    this.#now = o.now ?? Date.now;
    // Not `fetch` itself: naming it loads undici (some 15 MB resident) in every agent, scraped or not.
    this.#fetch = o.fetch ?? ((url, init) => fetch(url, init));
  }

  /** Reads the summary unless read (or tried) within 15 s; resolves within about 5 s either way, never rejects. */
  refresh(): Promise<void> {
    if (this.#running) return this.#running;
    if (this.#now() - this.#triedAt < STATUS_MAX_AGE_MS) return Promise.resolve();
    this.#triedAt = this.#now();
    this.#running = this.#read().finally(() => { this.#running = null; });
    return this.#running;
  }

  async #read(): Promise<void> {
    let error: string;
    let status = 0;
    try {
      const res = await this.#fetch(this.#url, {
        headers: { Authorization: `Bearer ${this.#token}`, Accept: 'application/json' },
        signal: AbortSignal.timeout(STATUS_TIMEOUT_MS),
      });
      status = res.status;
      if (res.ok) {
        const numbers = parseSummary(await res.json());
        if (numbers) {
          this.#numbers = numbers;
          this.#okAt = this.#now();
          if (this.#failing !== null) this.#log('queue.scrape-recovered', { url: this.#url });
          this.#failing = null;
          return;
        }
        error = 'not a queue summary';
      } else {
        await res.body?.cancel();
        error = `HTTP ${res.status}`;
      }
    } catch (err) {
      error = err instanceof Error ? (err.name === 'TimeoutError' ? `no answer within ${STATUS_TIMEOUT_MS / 1000} s` : err.message) : String(err);
    }
    this.errors.inc();
    // Once per streak, like connect.failed: the counter has every one.
    if (error !== this.#failing) {
      const h = hint(status);
      this.#log('queue.scrape-failed', { url: this.#url, error, ...(h ? { hint: h } : {}) });
    }
    this.#failing = error;
  }

  register(r: Registry): void {
    const age = (at: number | null): number => (at === null ? 0 : Math.max(0, this.#now() - at) / 1000);
    r.add(new Sampled('mailbridge_queue_messages', 'Messages in the queue object(s) by state (incoming: being stored)', 'gauge', 'state',
      () => this.#numbers?.states ?? null));
    r.add(new Sampled('mailbridge_queue_oldest_seconds', 'Age of the oldest message in each state (0: none), as of the last read',
      'gauge', 'state', () => {
        const n = this.#numbers;
        if (!n || this.#okAt === null) return null;
        const at = this.#okAt;
        return new Map([...n.oldest].filter(([st]) => st !== 'incoming').map(([st, o]) => [st, o === null ? 0 : Math.max(0, at - o) / 1000]));
      }));
    // Storage never grows silently: dead-letter, hold and bounced mail keep their bytes until an operator acts.
    r.add(new Sampled('mailbridge_queue_stored_bytes', 'Message bytes the queue keeps by state (in the object and in R2)', 'gauge', 'state',
      () => this.#numbers?.storedBytes ?? null));
    r.add(new Sampled('mailbridge_queue_stored_r2_bytes', 'Of those, bytes of bodies in R2, by state', 'gauge', 'state',
      () => this.#numbers?.storedR2Bytes ?? null));
    r.add(new Sampled('mailbridge_queue_storage_bytes', 'Storage in use: the queue objects\' SQLite (object) and R2 bodies (r2)', 'gauge', 'store',
      () => this.#numbers?.storage ?? null));
    r.add(new Sampled('mailbridge_queue_storage_limit_bytes', 'The plan\'s limit for each store (Free plan: object 5 GB, r2 10 GB)', 'gauge', 'store',
      () => this.#numbers?.storageLimit ?? null));
    r.add(new Sampled('mailbridge_bounces_sent_total', 'Bounces (DSNs) the queue object has had sent', 'counter', null,
      () => this.#numbers?.bouncesSent ?? null));
    r.add(this.errors);
    r.add(new Sampled('mailbridge_queue_status_up', '1 when the last read of the queue summary succeeded', 'gauge', null,
      () => (this.#failing === null && this.#okAt !== null ? 1 : 0)));
    r.add(new Sampled('mailbridge_queue_status_age_seconds', 'Seconds since the queue numbers were read (they are stale when this grows past 15)',
      'gauge', null, () => (this.#okAt === null ? null : age(this.#okAt))));
  }
}
