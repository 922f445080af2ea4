// Fetches a message body stored in R2 (the message frame's `fetch`) from the Worker:
// GET /agent/body/<id> on the connection's host and shard, with the agent's token and the
// session that holds the lease (the object serves the body to that session alone). Feeds
// the InboundMessage as the response streams, at most FETCH_AHEAD_BYTES ahead of the LMTP
// client: the memory bound that credit is for chunked messages. A fetch that fails, stalls,
// runs past its deadline, or brings the wrong length or MD5 fails the message (inbound.ts):
// the LMTP client never sends the final dot, the session nacks, the object retries it later.
//
// node:http(s) with one keep-alive agent per process, not the global fetch: fetch loads undici
// (about 15 MB more resident memory, issue #24) and costs more CPU per request (WHATWG
// streams, an AbortSignal and a DOMException per message).
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { BODY_SESSION_HEADER } from '../../protocol/wire.ts';
import type { InboundMessage } from './inbound.ts';

/** Connections to the Worker kept between fetches: no handshake per message. */
const agents = { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true }) };

/** What a network wait of the fetch gives once no more bytes are wanted. */
const STOPPED = Symbol('stopped');

/**
 * Bytes fetched and not yet read by the LMTP client before the fetch waits: per message in
 * flight, so small (1 MiB took four 25 MiB messages at once past 80 MB, issue #24); the
 * kernel's socket buffers keep the download going meanwhile.
 */
export const FETCH_AHEAD_BYTES = 256 * 1024;

/** How long one body fetch may take. */
export interface FetchLimits {
  /**
   * No answer, then no byte, for this long while the fetch is waiting for the network: given
   * up. Time spent waiting for the LMTP client to read (FETCH_AHEAD_BYTES) is not counted:
   * its own timeouts cover it.
   */
  idleMs: number;
  /** The whole fetch, from its request to its last byte, whoever is slow. */
  deadlineMs: number;
}

/** A healthy home line moves a 25 MiB body in well under a minute; these only catch the dead ones. */
export const FETCH_LIMITS: FetchLimits = { idleMs: 60_000, deadlineMs: 10 * 60_000 };

/** The error of a request whose connection was closed under it, before any answer. */
function isReset(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ECONNRESET' || code === 'EPIPE';
}

/** The body's URL: the session's ws(s)://host/agent?shard=N as http(s)://host/agent/body/<id>?shard=N. */
export function bodyUrl(workerUrl: string, id: string): string {
  const u = new URL(workerUrl);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  u.pathname = `/agent/body/${id}`;
  return u.href;
}

/**
 * Pushes Cloudflare's block, then the fetched body, then ends the message (which checks size
 * and MD5). Never throws: any failure (HTTP status, network, timeout, cut-off body) fails the
 * message, which the session answers with a nack. A consumer that stops reading (the journal
 * answered, every recipient refused) stops the download and ends the message unread.
 */
export async function fetchBody(
  workerUrl: string, token: string, msg: InboundMessage, limits: FetchLimits = FETCH_LIMITS, session: string | null = null,
): Promise<void> {
  const f = msg.header.fetch;
  if (!f) return msg.fail('not a fetched message');
  /** The request, once made; destroyed when no more bytes are wanted before the body's end. */
  let req: ClientRequest | null = null;
  /** The response ended: nothing left to stop (and its connection is back in the pool). */
  let over = false;
  /** Why the fetch was stopped by us (a timeout), for the failure's text. */
  let why: string | null = null;
  const giveUp = (reason: string): void => {
    why = reason;
    msg.fail(reason);  // also wakes a wait for room; the stop hook then ends the request
  };
  // Destroying the request is not enough to end a wait: every network wait also ends when
  // no more bytes are wanted (`wake`).
  let wanted = true;
  let wake: (() => void) | null = null;
  msg.onStop(() => {
    wanted = false;
    wake?.();
    if (!over) req?.destroy();
  });
  const deadline = setTimeout(() => giveUp(`body fetch: not complete within ${limits.deadlineMs} ms`), limits.deadlineMs);
  let idle: NodeJS.Timeout | null = null;
  /** The fetch is over: the message ends checked (end: size and MD5), unread (abandoned), or failed already. */
  const finish = (): void => {
    if (msg.abandoned) msg.endUnread();
    else msg.end();
  };
  /**
   * Runs `step` (a network wait) under the idle timer; STOPPED once no more bytes are wanted.
   * Not Promise.race with one promise of the stop: each race leaves a reaction on that promise
   * (pending all fetch long) which keeps its result, a chunk, alive: a 25 MiB body stayed in
   * memory whole until its end (issue #24). A wait here leaves nothing behind once it ends.
   */
  const watched = <T>(step: Promise<T>): Promise<T | typeof STOPPED> => {
    step.catch(() => undefined);  // lost the race: its rejection is nobody's
    if (!wanted) return Promise.resolve(STOPPED);
    return new Promise<T | typeof STOPPED>((resolve, reject) => {
      const ended = (): void => {
        if (idle !== null) clearTimeout(idle);
        wake = null;
      };
      idle = setTimeout(() => giveUp(`body fetch: nothing from the Worker for ${limits.idleMs} ms`), limits.idleMs);
      wake = () => { ended(); resolve(STOPPED); };
      step.then((v) => { ended(); resolve(v); }, (err: unknown) => { ended(); reject(err); });
    });
  };
  try {
    const block = Buffer.from(f.block, 'base64');
    if (block.byteLength > 0) msg.push(new Uint8Array(block.buffer, block.byteOffset, block.byteLength));
    // The session holding the lease (the welcome's): the Worker serves the body to it alone.
    const headers: Record<string, string> = { Authorization: `Bearer ${token}`, ...(session !== null ? { [BODY_SESSION_HEADER]: session } : {}) };
    const url = bodyUrl(workerUrl, msg.header.id);
    const tls = url.startsWith('https:');
    const ask = (): { r: ClientRequest; answered: Promise<IncomingMessage> } => {
      const r = (tls ? httpsRequest : httpRequest)(url, { headers, agent: tls ? agents.https : agents.http });
      req = r;
      // Every error (also one after the answer: a cut connection, or our own destroy()) shows in
      // the waits below; none may go unhandled.
      r.on('error', () => undefined);
      const answered = new Promise<IncomingMessage>((resolve, reject) => {
        r.once('response', resolve);
        r.once('error', reject);
      });
      r.end();
      if (msg.failure || msg.abandoned) r.destroy();  // stopped while the request was being made
      return { r, answered };
    };
    let { r, answered } = ask();
    let res: IncomingMessage | typeof STOPPED;
    try {
      res = await watched(answered);
    } catch (err) {
      // A kept connection the Worker (or a proxy) closed just as it was reused, before any answer:
      // once more on a new connection (Node's advice for `reusedSocket`; a GET is safe to repeat).
      if (!r.reusedSocket || !wanted || !isReset(err)) throw err;
      ({ r, answered } = ask());
      res = await watched(answered);
    }
    if (res === STOPPED) return finish();
    if (res.statusCode !== 200) {
      res.resume();
      over = true;
      return msg.fail(`body fetch: HTTP ${res.statusCode ?? 0}`);
    }
    const body = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    for (;;) {
      const got = await watched(body.next());
      if (got === STOPPED || msg.failure || msg.abandoned) {
        // Failed meanwhile (connection closed, more bytes than announced, a timeout) or nobody reads on.
        if (!over) r.destroy();
        break;
      }
      if (got.done) {
        over = true;
        break;
      }
      const chunk = got.value;
      msg.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      await msg.room(FETCH_AHEAD_BYTES);
    }
    finish();
  } catch (err) {
    // An end of the request after the consumer left is not a failure: nothing more was wanted.
    if (!msg.abandoned) msg.fail(why ?? `body fetch: ${err instanceof Error ? err.message : String(err)}`);
    finish();
  } finally {
    clearTimeout(deadline);
    if (idle !== null) clearTimeout(idle);
  }
}
