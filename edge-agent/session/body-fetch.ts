// Fetches a message body stored in R2 (the message frame's `fetch`) from the Worker:
// GET /agent/body/<id> on the connection's host and shard, with the agent's token and the
// session that holds the lease (the object serves the body to that session alone). Feeds
// the InboundMessage as the response streams, at most FETCH_AHEAD_BYTES ahead of the LMTP
// client: the memory bound that credit is for chunked messages. A fetch that fails, stalls,
// runs past its deadline, or brings the wrong length or MD5 fails the message (inbound.ts):
// the LMTP client never sends the final dot, the session nacks, the object retries it later.
import { BODY_SESSION_HEADER } from '../../protocol/wire.ts';
import type { InboundMessage } from './inbound.ts';

/** What a network wait of the fetch gives once no more bytes are wanted. */
const STOPPED = Symbol('stopped');

/** Bytes fetched and not yet read by the LMTP client before the fetch waits. */
export const FETCH_AHEAD_BYTES = 1024 * 1024;

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
  const abort = new AbortController();
  /** Why the fetch was stopped by us (a timeout), for the failure's text. */
  let why: string | null = null;
  const giveUp = (reason: string): void => {
    why = reason;
    msg.fail(reason);  // also wakes a wait for room; the stop hook then aborts the request
  };
  // Aborting is not enough to end a wait: a read pending on a response whose bytes all came
  // already may never settle once its request is aborted (seen with Node 22's fetch under the
  // path fuzzer). Every network wait is raced against this too.
  let stop: () => void = () => {};
  const stopped = new Promise<typeof STOPPED>((resolve) => { stop = () => resolve(STOPPED); });
  msg.onStop(() => {
    stop();
    abort.abort();
  });
  const deadline = setTimeout(() => giveUp(`body fetch: not complete within ${limits.deadlineMs} ms`), limits.deadlineMs);
  let idle: NodeJS.Timeout | null = null;
  /** The fetch is over: the message ends checked (end: size and MD5), unread (abandoned), or failed already. */
  const finish = (): void => {
    if (msg.abandoned) msg.endUnread();
    else msg.end();
  };
  /** Runs `step` (a network wait) under the idle timer; STOPPED once no more bytes are wanted. */
  const watched = async <T>(step: Promise<T>): Promise<T | typeof STOPPED> => {
    step.catch(() => undefined);  // lost the race: its rejection is nobody's
    idle = setTimeout(() => giveUp(`body fetch: nothing from the Worker for ${limits.idleMs} ms`), limits.idleMs);
    try {
      return await Promise.race([step, stopped]);
    } finally {
      clearTimeout(idle);
    }
  };
  try {
    const block = Buffer.from(f.block, 'base64');
    if (block.byteLength > 0) msg.push(new Uint8Array(block.buffer, block.byteOffset, block.byteLength));
    // The session holding the lease (the welcome's): the Worker serves the body to it alone.
    const headers: Record<string, string> = { Authorization: `Bearer ${token}`, ...(session !== null ? { [BODY_SESSION_HEADER]: session } : {}) };
    const request = fetch(bodyUrl(workerUrl, msg.header.id), { headers, signal: abort.signal });
    const res = await watched(request);
    if (res === STOPPED) {
      // An answer that still comes is not read.
      void request.then((late) => late.body?.cancel()).catch(() => undefined);
      return finish();
    }
    if (res.status !== 200 || res.body === null) {
      await res.body?.cancel().catch(() => undefined);
      return msg.fail(`body fetch: HTTP ${res.status}`);
    }
    const reader = res.body.getReader();
    for (;;) {
      const got = await watched(reader.read());
      if (got === STOPPED || msg.failure || msg.abandoned) {
        // Failed meanwhile (connection closed, more bytes than announced, a timeout) or nobody reads on.
        void reader.cancel().catch(() => undefined);
        break;
      }
      if (got.done) break;
      msg.push(got.value);
      await msg.room(FETCH_AHEAD_BYTES);
    }
    finish();
  } catch (err) {
    // An abort after the consumer left is not a failure: nothing more was wanted.
    if (!msg.abandoned) msg.fail(why ?? `body fetch: ${err instanceof Error ? err.message : String(err)}`);
    finish();
  } finally {
    clearTimeout(deadline);
    if (idle !== null) clearTimeout(idle);
  }
}
