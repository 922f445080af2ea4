// The HTTP client of the Worker's admin API (docs/operations.md, "The queue's admin API" and "relayctl").
// Every answer is checked field by field before anything uses it, so a wrong URL,
// a proxy's error page or a Worker of another version becomes a clear error, not
// `undefined` in a table. Errors carry the exit code relayctl ends with.
import { MAX_LIST, STATES, type QueueMessage, type State } from '../protocol/queue.ts';
import { FAILURE_REASONS, isMessageId, type Outcome, type RecipientResult } from '../protocol/wire.ts';

export { MAX_LIST, STATES, type State };
const OUTCOMES: readonly Outcome[] = ['delivered', 'tempfail', 'permfail'];
/** How long relayctl waits for an answer (for export: for each piece of the body). */
const TIMEOUT_MS = 30_000;

export type ErrorKind =
  | 'usage'        // bad command line (exit 2)
  | 'config'       // bad URL, unreadable token file
  | 'unreachable'  // connection refused, DNS, timeout
  | 'auth'         // 401
  | 'not-found'    // unknown message id
  | 'conflict'     // 409: the message is not in the state the action needs
  | 'api'          // an answer that is not the admin API's (404 on /admin, HTML, bad JSON)
  | 'server'       // 4xx/5xx with the Worker's own error text
  | 'integrity';   // an export whose bytes do not match the stored size and hash

export class CliError extends Error {
  readonly kind: ErrorKind;
  constructor(kind: ErrorKind, message: string) {
    super(message);
    this.kind = kind;
  }
  /** 2 for usage errors, 1 for everything else. */
  get exitCode(): number {
    return this.kind === 'usage' ? 2 : 1;
  }
}

export interface Agent { agent: string; session: string }
/** Messages and their stored bytes in one state (`r2Bytes`: of those, in R2). */
export interface Stored { bodies: number; bytes: number; r2Bytes: number }
/** The deployment's storage in use and the plan's limits (absent from a Worker older than it). */
export interface StorageUse { objectBytes: number; objectLimitBytes: number; r2Bytes: number; r2LimitBytes: number; warnPercent: number }
/** `oldest`: receivedAt of the oldest message still owed (not bounced or dead-lettered). */
export interface Summary {
  states: Record<State, number>; agents: Agent[]; oldest: number | null;
  stored: Record<State, Stored> | null; storage: StorageUse | null;
}

/** A message as the admin API shows it: protocol/queue.ts defines it for both ends. */
export type Message = QueueMessage;
export interface HeaderField { name: string; value: string }
export interface MessageDetail extends Message { headers: HeaderField[] }

export interface RawMessage {
  size: number;
  /**
   * The digest of the bytes after the first `prefix` (Cloudflare's block): SHA-256 of a
   * message stored in chunks, R2's MD5 of one whose body is in R2.
   */
  digest: { algorithm: 'sha256' | 'md5'; hex: string };
  prefix: number;
  body: AsyncIterable<Uint8Array>;
}

// ---- validation -----------------------------------------------------------------

type Obj = Record<string, unknown>;

/** Thrown by the checks below; request() turns it into a CliError naming the URL. */
class ShapeError extends Error {}

function obj(v: unknown, at: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ShapeError(`${at}: not an object`);
  return v as Obj;
}
function arr(v: unknown, at: string): unknown[] {
  if (!Array.isArray(v)) throw new ShapeError(`${at}: not an array`);
  return v;
}
function str(v: unknown, at: string): string {
  if (typeof v !== 'string') throw new ShapeError(`${at}: not a string`);
  return v;
}
function int(v: unknown, at: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new ShapeError(`${at}: not a whole number`);
  return v;
}
function strOrNull(v: unknown, at: string): string | null {
  return v === null ? null : str(v, at);
}
function intOrNull(v: unknown, at: string): number | null {
  return v === null ? null : int(v, at);
}
function oneOf<T extends string>(v: unknown, list: readonly T[], at: string): T {
  if (typeof v !== 'string' || !(list as readonly string[]).includes(v)) throw new ShapeError(`${at}: not one of ${list.join(', ')}`);
  return v as T;
}
function messageId(v: unknown, at: string): string {
  if (!isMessageId(v)) throw new ShapeError(`${at}: not a message id`);
  return v;
}

function result(v: unknown, at: string): RecipientResult {
  const o = obj(v, at);
  return {
    recipient: str(o.recipient, `${at}.recipient`),
    code: int(o.code, `${at}.code`),
    enhanced: strOrNull(o.enhanced, `${at}.enhanced`),
    text: str(o.text, `${at}.text`),
    outcome: oneOf(o.outcome, OUTCOMES, `${at}.outcome`),
  };
}

function message(v: unknown, at: string): Message {
  const o = obj(v, at);
  return {
    id: messageId(o.id, `${at}.id`),
    state: oneOf(o.state, STATES, `${at}.state`),
    sender: str(o.sender, `${at}.sender`),
    recipients: arr(o.recipients, `${at}.recipients`).map((r, i) => str(r, `${at}.recipients[${i}]`)),
    results: arr(o.results, `${at}.results`).map((r, i) => result(r, `${at}.results[${i}]`)),
    size: int(o.size, `${at}.size`),
    sha256: str(o.sha256, `${at}.sha256`),
    // Absent from a Worker older than the Cloudflare block's recognition: no prefix.
    prefix: o.prefix === undefined ? 0 : int(o.prefix, `${at}.prefix`),
    chunks: int(o.chunks, `${at}.chunks`),
    // Absent from a Worker older than bodies in R2: the bytes are in chunks.
    bodyKey: o.bodyKey === undefined ? null : strOrNull(o.bodyKey, `${at}.bodyKey`),
    md5: o.md5 === undefined ? null : strOrNull(o.md5, `${at}.md5`),
    receivedAt: int(o.receivedAt, `${at}.receivedAt`),
    retryFrom: int(o.retryFrom, `${at}.retryFrom`),
    attempts: int(o.attempts, `${at}.attempts`),
    nextAttemptAt: intOrNull(o.nextAttemptAt, `${at}.nextAttemptAt`),
    leaseSession: strOrNull(o.leaseSession, `${at}.leaseSession`),
    lastError: strOrNull(o.lastError, `${at}.lastError`),
    // Absent from a Worker older than the bounce states: read as null.
    failure: o.failure === undefined || o.failure === null ? null : oneOf(o.failure, FAILURE_REASONS, `${at}.failure`),
    bounceStatus: o.bounceStatus === undefined ? null : strOrNull(o.bounceStatus, `${at}.bounceStatus`),
    settledAt: o.settledAt === undefined ? null : intOrNull(o.settledAt, `${at}.settledAt`),
  };
}

function summary(v: unknown): Summary {
  const o = obj(v, 'body');
  const s = obj(o.states, 'body.states');
  const states = Object.fromEntries(STATES.map((k) => [k, int(s[k], `body.states.${k}`)])) as Record<State, number>;
  const agents = arr(o.agents, 'body.agents').map((a, i) => {
    const x = obj(a, `body.agents[${i}]`);
    return { agent: str(x.agent, `body.agents[${i}].agent`), session: str(x.session, `body.agents[${i}].session`) };
  });
  // A Worker older than these answers without them: shown as unknown, not as an error.
  const stored = o.stored === undefined ? null : Object.fromEntries(STATES.map((k) => {
    const x = obj(obj(o.stored, 'body.stored')[k], `body.stored.${k}`);
    return [k, { bodies: int(x.bodies, `body.stored.${k}.bodies`), bytes: int(x.bytes, `body.stored.${k}.bytes`), r2Bytes: int(x.r2Bytes, `body.stored.${k}.r2Bytes`) }];
  })) as Record<State, Stored>;
  const u = o.storage === undefined ? null : obj(o.storage, 'body.storage');
  const storage = u === null ? null : {
    objectBytes: int(u.objectBytes, 'body.storage.objectBytes'), objectLimitBytes: int(u.objectLimitBytes, 'body.storage.objectLimitBytes'),
    r2Bytes: int(u.r2Bytes, 'body.storage.r2Bytes'), r2LimitBytes: int(u.r2LimitBytes, 'body.storage.r2LimitBytes'),
    warnPercent: int(u.warnPercent, 'body.storage.warnPercent'),
  };
  return { states, agents, oldest: intOrNull(o.oldest, 'body.oldest'), stored, storage };
}

function messageList(v: unknown): Message[] {
  return arr(obj(v, 'body').messages, 'body.messages').map((m, i) => message(m, `body.messages[${i}]`));
}

function detail(v: unknown): MessageDetail {
  const o = obj(v, 'body');
  const headers = arr(o.headers, 'body.headers').map((h, i) => {
    const x = obj(h, `body.headers[${i}]`);
    return { name: str(x.name, `body.headers[${i}].name`), value: str(x.value, `body.headers[${i}].value`) };
  });
  return { ...message(o, 'body'), headers };
}

function actionAnswer(id: string, key: 'state' | 'purged' | 'deleted', want: unknown): (v: unknown) => void {
  return (v) => {
    const o = obj(v, 'body');
    if (o.id !== id || o[key] !== want) throw new ShapeError(`body: expected {"id":"${id}","${key}":${JSON.stringify(want)}}`);
  };
}

// ---- the client -------------------------------------------------------------------

/** Checks a base URL (the Worker's, without /admin) and returns it ending in '/'. */
export function parseBaseUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new CliError('config', `bad URL ${JSON.stringify(text)}: give the Worker's base URL, e.g. https://mailbridge.<account>.workers.dev`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new CliError('config', `bad URL ${text}: only http: and https: are supported`);
  }
  if (url.username !== '' || url.password !== '') {
    throw new CliError('config', `bad URL ${text}: no credentials in the URL; the token comes from --token-file or RELAYCTL_TOKEN`);
  }
  if (url.search !== '' || url.hash !== '') throw new CliError('config', `bad URL ${text}: no query or fragment, please`);
  if (/\/admin\/?$/.test(url.pathname)) {
    throw new CliError('config', `bad URL ${text}: give the Worker's base URL, without /admin`);
  }
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return url;
}

export interface ClientOptions {
  baseUrl: URL;
  token: string;
}

interface Answer { status: number; json: unknown; text: string }

export class AdminClient {
  readonly #base: URL;
  readonly #token: string;

  constructor(opts: ClientOptions) {
    this.#base = opts.baseUrl;
    this.#token = opts.token;
  }

  get baseUrl(): string {
    return this.#base.href;
  }

  summary(): Promise<Summary> {
    return this.#call('GET', 'admin/queue', summary);
  }

  /** Oldest first; state null = every state but incoming. */
  list(state: State | null, limit: number): Promise<Message[]> {
    const q = new URLSearchParams({ limit: String(limit) });
    if (state !== null) q.set('state', state);
    return this.#call('GET', `admin/messages?${q}`, messageList);
  }

  deadLetter(limit: number): Promise<Message[]> {
    return this.#call('GET', `admin/dead-letter?limit=${limit}`, messageList);
  }

  show(id: string): Promise<MessageDetail> {
    return this.#call('GET', `admin/messages/${id}`, detail, id);
  }

  /** deferred -> queued now. A 409 (not deferred) is a 'conflict' CliError. */
  async retry(id: string): Promise<void> {
    await this.#call('POST', `admin/messages/${id}/retry`, actionAnswer(id, 'state', 'queued'), id);
  }

  /** dead-letter -> queued, fresh retry clock. */
  /** dead-letter -> queued; returns the id it is queued under (new since issue #22; an older Worker keeps `id`). */
  async replay(id: string): Promise<string> {
    return this.#call('POST', `admin/messages/${id}/replay`, (v) => {
      const o = obj(v, 'body');
      const from = o.replayedFrom ?? o.id;
      if (from !== id || o.state !== 'queued' || typeof o.id !== 'string' || !isMessageId(o.id)) {
        throw new ShapeError(`body: expected {"id":"<new id>","replayedFrom":"${id}","state":"queued"}`);
      }
      return o.id;
    }, id);
  }

  /** queued/deferred -> hold (postsuper -h). */
  async hold(id: string): Promise<void> {
    await this.#call('POST', `admin/messages/${id}/hold`, actionAnswer(id, 'state', 'hold'), id);
  }

  /** hold -> queued (postsuper -H). */
  async release(id: string): Promise<void> {
    await this.#call('POST', `admin/messages/${id}/release`, actionAnswer(id, 'state', 'queued'), id);
  }

  /** Deletes a message not in flight from the live queue (postsuper -d). */
  async delete(id: string): Promise<void> {
    await this.#call('POST', `admin/messages/${id}/delete`, actionAnswer(id, 'deleted', true), id);
  }

  /** Every deferred message is due now (postqueue -f); how many were. */
  flush(): Promise<number> {
    return this.#call('POST', 'admin/flush', (v: unknown) => {
      const o = obj(v, 'body');
      return int(o.flushed, 'body.flushed');
    });
  }

  /** Deletes a dead-lettered message for good. */
  async purge(id: string): Promise<void> {
    await this.#call('DELETE', `admin/messages/${id}`, actionAnswer(id, 'purged', true), id);
  }

  /**
   * The stored bytes of a message, streamed as they arrive; the caller checks them
   * against `size` and `sha256` (the Worker cannot signal a cut-off stream otherwise).
   */
  async raw(id: string): Promise<RawMessage> {
    const url = this.#url(`admin/messages/${id}/raw`);
    const abort = new AbortController();
    let timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    const res = await this.#fetch('GET', url, abort.signal).catch((err: unknown) => {
      clearTimeout(timer);
      throw err;
    });
    if (res.status !== 200) {
      clearTimeout(timer);
      const text = await res.text().catch(() => '');
      if (res.status === 405) throw new CliError('api', `${url.origin} has no raw message route (405): deploy a Worker as new as relayctl`);
      throw this.#failure(url, { status: res.status, json: tryJson(text), text }, id);
    }
    const size = Number(res.headers.get('X-Message-Size'));
    const sha256 = res.headers.get('X-Message-Sha256') ?? '';
    const md5 = res.headers.get('X-Message-Md5') ?? '';
    // Absent from a Worker before the Cloudflare block was recognised: sha256 covers every byte.
    const prefix = Number(res.headers.get('X-Message-Prefix') ?? '0');
    const type = res.headers.get('Content-Type') ?? '';
    if (!Number.isSafeInteger(size) || size < 0 || !Number.isSafeInteger(prefix) || prefix < 0 || prefix > size || !(/^[0-9a-f]{64}$/.test(sha256) || /^[0-9a-f]{32}$/.test(md5)) || !type.startsWith('application/octet-stream') || res.body === null) {
      clearTimeout(timer);
      await res.body?.cancel().catch(() => {});
      throw new CliError('api', `unexpected answer from ${url.href}: not a raw message (missing X-Message-Size / X-Message-Sha256); is the Worker older than relayctl?`);
    }
    const body = res.body;
    async function* pieces(): AsyncGenerator<Uint8Array> {
      const reader = body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          clearTimeout(timer);
          if (done) return;
          timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
          yield value;
        }
      } catch (err) {
        throw new CliError('unreachable', `export of ${id} broke off: ${describe(err, abort.signal)}`);
      } finally {
        clearTimeout(timer);
        reader.releaseLock();
        await body.cancel().catch(() => {});
      }
    }
    const digest = /^[0-9a-f]{64}$/.test(sha256) ? { algorithm: 'sha256' as const, hex: sha256 } : { algorithm: 'md5' as const, hex: md5 };
    return { size, digest, prefix, body: pieces() };
  }

  #url(path: string): URL {
    return new URL(path, this.#base);
  }

  async #fetch(method: string, url: URL, signal: AbortSignal): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(url, {
        method, signal, redirect: 'manual',
        headers: { Authorization: `Bearer ${this.#token}`, Accept: 'application/json, application/octet-stream' },
      });
    } catch (err) {
      throw new CliError('unreachable', `cannot reach ${url.origin}: ${describe(err, signal)}`);
    }
    if (res.status >= 300 && res.status < 400) {
      await res.body?.cancel().catch(() => {});
      const to = res.headers.get('Location');
      throw new CliError('config', `bad URL: ${url.href} redirects${to === null ? '' : ` to ${to}`} (HTTP ${res.status}); use the final URL as --url`);
    }
    return res;
  }

  async #call<T>(method: string, path: string, check: (body: unknown) => T, id?: string): Promise<T> {
    const url = this.#url(path);
    const signal = AbortSignal.timeout(TIMEOUT_MS);
    const res = await this.#fetch(method, url, signal);
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw new CliError('unreachable', `${url.origin} broke off its answer: ${describe(err, signal)}`);
    }
    const answer: Answer = { status: res.status, json: tryJson(text), text };
    if (res.status !== 200) throw this.#failure(url, answer, id);
    if (answer.json === undefined) throw new CliError('api', `unexpected answer from ${url.href}: not JSON (${excerpt(text)}); is --url the mailbridge Worker?`);
    try {
      return check(answer.json);
    } catch (err) {
      if (err instanceof ShapeError) throw new CliError('api', `unexpected answer from ${url.href}: ${err.message}; is the Worker the same version as relayctl?`);
      throw err;
    }
  }

  /** The CliError for a non-200 answer. `id` is set for calls about one message. */
  #failure(url: URL, a: Answer, id: string | undefined): CliError {
    const said = errorText(a.json);
    switch (a.status) {
      case 401:
        return new CliError('auth', `bad token: ${url.origin} refused it (401); the token must be the Worker's ADMIN_TOKEN`);
      case 404:
        // The API says exactly this for an unknown message; any other 404 means no admin API here.
        if (id !== undefined && said === 'no such message') return new CliError('not-found', `no message ${id} in the queue (delivered, purged, or never there)`);
        return new CliError('api', `no admin API at ${url.href} (404): check --url, and that the Worker has an ADMIN_TOKEN secret`);
      case 409:
        return new CliError('conflict', `${id ?? 'message'}: ${said ?? 'not in the right state for this'}`);
      default:
        return new CliError('server', `${url.href} answered HTTP ${a.status}: ${said ?? excerpt(a.text)}`);
    }
  }
}

function tryJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function errorText(json: unknown): string | null {
  return typeof json === 'object' && json !== null && typeof (json as Obj).error === 'string' ? (json as Obj).error as string : null;
}

function excerpt(text: string): string {
  const t = text.replace(/\s+/g, ' ').trim();
  return t === '' ? 'empty body' : JSON.stringify(t.length > 80 ? `${t.slice(0, 80)}…` : t);
}

/** fetch's "fetch failed" hides the reason in `cause` (ECONNREFUSED, ENOTFOUND, a TLS error). */
function describe(err: unknown, signal: AbortSignal): string {
  if (signal.aborted) return `no answer within ${TIMEOUT_MS / 1000} s`;
  let e: unknown = err;
  const parts: string[] = [];
  for (let depth = 0; e instanceof Error && depth < 4; depth++, e = e.cause) {
    const code = (e as Error & { code?: unknown }).code;
    parts.push(typeof code === 'string' && !e.message.includes(code) ? `${e.message} (${code})` : e.message);
  }
  return parts.filter((p) => p !== 'fetch failed').join(': ') || String(err);
}
