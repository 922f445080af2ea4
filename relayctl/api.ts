// The HTTP client of the Worker's admin API (docs/operations.md, "The queue's admin API" and "relayctl").
// Every answer is checked field by field before anything uses it, so a wrong URL,
// a proxy's error page or a Worker of another version becomes a clear error, not
// `undefined` in a table. Errors carry the exit code relayctl ends with.
import {
  AdminShapeError, checkActionAnswer, parseFlushAnswer, parseMessageDetail, parseMessageList, parseQueueSummary, parseReplayAnswer,
  type MessageDetail, type QueueSummaryRead,
} from '../protocol/admin.ts';
import { MAX_LIST, STATES, type QueueMessage, type State } from '../protocol/queue.ts';

export { MAX_LIST, STATES, type State };
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

/** A message as the admin API shows it: protocol/queue.ts defines it for both ends. */
export type Message = QueueMessage;

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

// ---- the client (every answer checked by protocol/admin.ts) ------------------------

function actionAnswer(id: string, key: 'state' | 'purged' | 'deleted', want: State | true): (v: unknown) => void {
  return (v) => checkActionAnswer(v, id, key, want);
}

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

  summary(): Promise<QueueSummaryRead> {
    return this.#call('GET', 'admin/queue', parseQueueSummary);
  }

  /** Oldest first; state null = every state but incoming. */
  list(state: State | null, limit: number): Promise<Message[]> {
    const q = new URLSearchParams({ limit: String(limit) });
    if (state !== null) q.set('state', state);
    return this.#call('GET', `admin/messages?${q}`, parseMessageList);
  }

  deadLetter(limit: number): Promise<Message[]> {
    return this.#call('GET', `admin/dead-letter?limit=${limit}`, parseMessageList);
  }

  show(id: string): Promise<MessageDetail> {
    return this.#call('GET', `admin/messages/${id}`, parseMessageDetail, id);
  }

  /** deferred -> queued now. A 409 (not deferred) is a 'conflict' CliError. */
  async retry(id: string): Promise<void> {
    await this.#call('POST', `admin/messages/${id}/retry`, actionAnswer(id, 'state', 'queued'), id);
  }

  /** dead-letter -> queued, fresh retry clock. */
  /** dead-letter -> queued; returns the id it is queued under (new since issue #22; an older Worker keeps `id`). */
  async replay(id: string): Promise<string> {
    return this.#call('POST', `admin/messages/${id}/replay`, (v) => parseReplayAnswer(v, id), id);
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
    return this.#call('POST', 'admin/flush', parseFlushAnswer);
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
      if (err instanceof AdminShapeError) throw new CliError('api', `unexpected answer from ${url.href}: ${err.message}; is the Worker the same version as relayctl?`);
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
  return typeof json === 'object' && json !== null && typeof (json as Record<string, unknown>).error === 'string' ? (json as Record<string, unknown>).error as string : null;
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
