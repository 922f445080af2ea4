// The admin HTTP API: the queue seen and steered from outside, behind ADMIN_TOKEN
// (a separate secret from the agents' tokens). Read-only views and the actions below:
// retry, replay, hold, release, delete, flush, purge (postqueue/postsuper's habits).
// GET /admin/queue alone also takes STATUS_TOKEN (read-only: numbers, never a message or an
// address), which the agent uses for its metrics; every other route takes ADMIN_TOKEN only.
//
//   GET    /admin/queue                     counts, oldest and bytes stored by state, oldest owed, storage use, bounces sent, agents
//   GET    /admin/messages?state=&limit=    oldest first (state: one of STATES)
//   GET    /admin/messages/<id>             one message, with its parsed header fields
//   GET    /admin/messages/<id>/raw         its stored bytes, untouched (application/octet-stream)
//   POST   /admin/messages/<id>/retry       deferred -> queued now
//   POST   /admin/messages/<id>/replay      dead-letter -> queued under a new id, its undelivered recipients owed again, fresh retry clock
//   POST   /admin/messages/<id>/hold        queued/deferred -> hold (postsuper -h)
//   POST   /admin/messages/<id>/release     hold -> queued (postsuper -H)
//   POST   /admin/messages/<id>/delete      deletes a message not in flight (postsuper -d)
//   POST   /admin/flush                     every deferred message is due now (postqueue -f)
//   DELETE /admin/messages/<id>             purge; dead-letter and bounced only
//   GET    /admin/dead-letter               = /admin/messages?state=dead-letter
import { hasToken } from './auth.ts';
import type { QueueStub } from './shards.ts';
import { parseHeaders } from './headers.ts';
import type { MessageDetail, QueueSummary, ReplayAnswer } from '../protocol/admin.ts';
import { MAX_LIST, STATES, type State } from '../protocol/queue.ts';
import { isMessageId } from '../protocol/wire.ts';
import { withBlock } from './bodies.ts';
import { addStored, storageUse } from './storage.ts';


function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body, null, 2), { status, headers: { 'Content-Type': 'application/json' } });
}

const isState = (s: string): s is State => (STATES as readonly string[]).includes(s);

/**
 * A message's chunks as a byte stream, each fetched from the object only when the
 * reader asks (highWaterMark 0): one chunk in memory, bytes never decoded. A message
 * that goes away mid-stream (acked, purged) errors the stream; the body is cut short.
 */
function rawStream(queue: QueueStub, id: string, chunks: number): ReadableStream<Uint8Array> {
  let seq = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (seq >= chunks) return controller.close();
      const data = await queue.adminChunk(id, seq);
      if (data === null) throw new Error(`message ${id} left the queue during export`);
      seq++;
      controller.enqueue(data);
    },
  }, { highWaterMark: 0 });
}

/** The shard holding message `id` (ids are unique across shards), or null. */
async function ownerOf(shards: QueueStub[], id: string): Promise<QueueStub | null> {
  const found = await Promise.all(shards.map((q) => q.adminRaw(id)));
  const i = found.findIndex((f) => f !== null);
  return i >= 0 ? (shards[i] ?? null) : null;
}

/** The admin API's tokens; null = not set. */
export interface AdminTokens { admin: string | null; status: string | null }

/** `bodies`: the BODIES bucket, for exports of messages whose body is in R2 (null: unbound). */
export async function handleAdmin(request: Request, tokens: AdminTokens, shards: QueueStub[], bodies: R2Bucket | null): Promise<Response> {
  const url = new URL(request.url);
  const parts = url.pathname.split('/').slice(2);  // after '/admin'
  const method = request.method;
  const summary = method === 'GET' && parts.length === 1 && parts[0] === 'queue';
  const allowed = [tokens.admin, ...(summary ? [tokens.status] : [])].filter((x) => x !== null);
  if (!(await hasToken(request, allowed))) return json(401, { error: 'bad or missing bearer token' });

  if (summary) {
    const each = await Promise.all(shards.map((q) => q.adminSummary()));
    const states = Object.fromEntries(STATES.map((st) => [st, each.reduce((n, e) => n + (e.states[st] ?? 0), 0)])) as Record<State, number>;
    const agents = each.flatMap((e, shard) => e.agents.map((a) => ({ ...a, shard })));
    const oldest = each.map((e) => e.oldest).filter((o) => o !== null).reduce<number | null>((m, o) => (m === null || o < m ? o : m), null);
    const oldestByState = Object.fromEntries(STATES.map((st) => [st, each.reduce<number | null>((m, e) => {
      const o = e.oldestByState[st];
      return o === null || o === undefined ? m : m === null || o < m ? o : m;
    }, null)])) as Record<State, number | null>;
    const bouncesSent = each.reduce((n, e) => n + e.bouncesSent, 0);
    const stored = each.map((e) => e.stored).reduce(addStored);
    const r2Bytes = Object.values(stored).reduce((n, s) => n + s.r2Bytes, 0);
    const storage = storageUse(each.reduce((n, e) => n + e.objectBytes, 0), r2Bytes);
    const answer: QueueSummary = { states, agents, oldest, oldestByState, bouncesSent, stored, storage, shards: shards.length };
    return json(200, answer);
  }
  if (method === 'GET' && parts.length === 1 && (parts[0] === 'messages' || parts[0] === 'dead-letter')) {
    const state = parts[0] === 'dead-letter' ? 'dead-letter' : url.searchParams.get('state');
    if (state !== null && !isState(state)) return json(400, { error: `state must be one of ${STATES.join(', ')}` });
    const limitText = url.searchParams.get('limit') ?? '100';
    const limit = Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST) return json(400, { error: `limit must be 1..${MAX_LIST}` });
    const lists = await Promise.all(shards.map((q) => q.adminList(state, limit)));
    const messages = lists.flat().sort((a, b) => a.receivedAt - b.receivedAt || (a.id < b.id ? -1 : 1)).slice(0, limit);
    return json(200, { messages });
  }
  if (method === 'POST' && parts.length === 1 && parts[0] === 'flush') {
    const woken = await Promise.all(shards.map((q) => q.adminFlush()));
    return json(200, { flushed: woken.reduce((n, w) => n + w, 0) });
  }
  if (parts[0] !== 'messages' || parts.length < 2) return json(404, { error: 'not found' });
  const id = parts[1] ?? '';
  if (!isMessageId(id)) return json(400, { error: 'not a message id (32 hex digits)' });
  const action = parts.slice(2).join('/');
  const queue = await ownerOf(shards, id);

  if (method === 'GET' && action === '') {
    const shown = queue ? await queue.adminShow(id) : null;
    if (!shown) return json(404, { error: 'no such message' });
    const answer: MessageDetail = { ...shown.message, headers: parseHeaders(shown.header) };
    return json(200, answer);
  }
  if (method === 'GET' && action === 'raw') {
    const raw = queue ? await queue.adminRaw(id) : null;
    if (!queue || !raw) return json(404, { error: 'no such message' });
    if (raw.r2 !== null) {
      // Its block from the row, then its body from R2, natively; X-Message-Md5 covers the body.
      const object = bodies ? await bodies.get(raw.r2.key) : null;
      if (!object) return json(404, { error: 'the message\'s body is missing from R2' });
      return new Response(withBlock(raw.r2.block, object.body, raw.size), {
        headers: {
          'Content-Type': 'application/octet-stream', 'Cache-Control': 'no-store',
          'X-Message-Size': String(raw.size), 'X-Message-Md5': raw.r2.md5, 'X-Message-Prefix': String(raw.prefix),
        },
      });
    }
    // No Content-Length on a stream: the client checks the bytes against these (sha256: after the prefix).
    return new Response(rawStream(queue, id, raw.chunks), {
      headers: {
        'Content-Type': 'application/octet-stream', 'Cache-Control': 'no-store',
        'X-Message-Size': String(raw.size), 'X-Message-Sha256': raw.sha256,
        'X-Message-Prefix': String(raw.prefix),
      },
    });
  }
  if (method === 'POST' && action === 'retry') {
    return queue && (await queue.adminRetry(id)) ? json(200, { id, state: 'queued' }) : json(409, { error: 'not a deferred message' });
  }
  if (method === 'POST' && action === 'replay') {
    const replayed = queue ? await queue.adminReplay(id) : false;
    if (replayed === 'nothing-owed') return json(409, { error: 'nothing owed: every recipient of this message was delivered (purge it instead)' });
    if (replayed === false) return json(409, { error: 'not a dead-lettered message' });
    const answer: ReplayAnswer = { id: replayed.id, replayedFrom: id, state: 'queued' };
    return json(200, answer);
  }
  if (method === 'POST' && action === 'hold') {
    return queue && (await queue.adminHold(id)) ? json(200, { id, state: 'hold' }) : json(409, { error: 'only a queued or deferred message can be held' });
  }
  if (method === 'POST' && action === 'release') {
    return queue && (await queue.adminRelease(id)) ? json(200, { id, state: 'queued' }) : json(409, { error: 'not a held message' });
  }
  if (method === 'POST' && action === 'delete') {
    return queue && (await queue.adminDelete(id)) ? json(200, { id, deleted: true }) : json(409, { error: 'an agent holds this message now (in-flight): try again when it settles' });
  }
  if (method === 'DELETE' && action === '') {
    return queue && (await queue.adminPurge(id)) ? json(200, { id, purged: true }) : json(409, { error: 'only a dead-lettered message can be purged' });
  }
  return json(405, { error: `${method} not allowed here` });
}
