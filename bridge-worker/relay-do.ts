// The queue: one Durable Object holds every message until an agent acks it: its row, with its
// body in R2 (bodies.ts) or, without the bucket, in chunk rows (chunk-path.ts). This class only
// dispatches (Postfix's master to its daemons): the agent's socket (fetch, webSocket*), the
// Worker's RPCs (ingest, bodyOf, admin*) and the alarm, each to the module that does the job:
//   ingest.ts         one message stored and queued, whichever path its body took
//   connections.ts    hello, close, silence: leases released with the agent's affinity
//   pump.ts           leases under each connection's window and credit; chunks streamed
//   settle.ts         acks, nacks, rejected answers: done, deferred, expired, failed
//   bounce-tasks.ts   DSNs and delay warnings leased to an agent, and its answers
//   body-lifecycle.ts R2 deletes after their row, the orphan sweep
//   alarm.ts          what is due by now, and when next
//   admin-ops.ts      hold, release, delete, flush, retry, replay, purge, export, summary
// Written for hibernation: all per-socket state lives in the socket's attachment or in SQLite
// (queue-context.ts), so any handler may be the first after a wake-up.
import { DurableObject } from 'cloudflare:workers';
import type { ShardSummary } from '../protocol/admin.ts';
import { FRAME, PING, PONG, frameMessageId, parseAgentFrame } from '../protocol/wire.ts';
import * as admin from './admin-ops.ts';
import { runAlarm, scheduleAlarm } from './alarm.ts';
import type { StoredBody } from './bodies.ts';
import { deleteBodies } from './body-lifecycle.ts';
import { onBounced } from './bounce-tasks.ts';
import { keepTestClock, restoreTestClock } from './clock.ts';
import { disconnect, leasedBody, onHello, recoverLeases, violation } from './connections.ts';
import type { Env } from './env.ts';
import { chunkPath, ingest, storedPath, type IngestResult } from './ingest.ts';
import { log, randomId } from './log.ts';
import { HELD_CREDIT_BYTES, pump, pumpAll } from './pump.ts';
import { attachment, type Attachment, type QueueContext } from './queue-context.ts';
import { onRecipients } from './recipient-list.ts';
import { RecipientListStore } from './recipient-store.ts';
import { migrate, type State } from './schema.ts';
import { onAck, onNack, rejectAnswer } from './settle.ts';
import { MessageStore, type MessageRow } from './store.ts';
import { VerdictBoard } from './smtp-verdict.ts';
import { WarningStore } from './warning-store.ts';

export class RelayQueue extends DurableObject<Env> {
  readonly #q: QueueContext;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const q: QueueContext = this.#q = {
      store: new MessageStore(ctx.storage.sql), lists: new RecipientListStore(ctx.storage.sql),
      warnings: new WarningStore(ctx.storage.sql), env, state: ctx,
      verdicts: new VerdictBoard(), pumpPending: false, forOthers: false, recipients: undefined,
    };
    // Heartbeats are answered by the runtime without waking the object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING, PONG));
    void ctx.blockConcurrencyWhile(async () => {
      await restoreTestClock(env, ctx.storage);
      // Most starts are wake-ups after idling: a current schema, nothing left to recover.
      const state = q.store.startState();
      if (state === 'clean') return;
      if (state === 'migrate') migrate(ctx.storage.sql);
      // Ingests that died with the previous instance (a restart mid-ingest): nothing will finish them.
      const orphans = q.store.removeIncoming();
      if (orphans > 0) log('ingest.orphans-removed', { removed: orphans });
      recoverLeases(q);
    });
  }

  // ---- agent connections ------------------------------------------------------

  /** Only the Worker calls this, after checking the agent's token. */
  override async fetch(request: Request): Promise<Response> {
    if (request.headers.get('Upgrade')?.toLowerCase() !== 'websocket') {
      return new Response('expected a WebSocket upgrade', { status: 426 });
    }
    const pair = new WebSocketPair();
    const session = randomId();
    this.ctx.acceptWebSocket(pair[1], [session]);
    const a: Attachment = { v: 1, session, agent: null, window: 1, credit: 0, cursor: null, draining: false, connectedAt: Date.now() };
    pair[1].serializeAttachment(a);
    log('agent.connected', { session });
    // Arms the silence check now: a socket that never sends a frame must not live forever.
    await scheduleAlarm(this.#q);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  override async webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): Promise<void> {
    const q = this.#q;
    const a = attachment(ws);
    if (!a) return violation(q, ws, null, 'socket without attachment');
    if (a.closed) return;  // we closed it; its leases are already released
    if (typeof data !== 'string') return violation(q, ws, a, 'binary frame from agent');
    const frame = parseAgentFrame(data);
    if (!frame) {
      // An answer about one message that breaks the protocol's limits affects that message only.
      const id = frameMessageId(data);
      if (id === null || a.cursor?.id === id || !rejectAnswer(q, a, id, 'the agent\'s answer broke the wire protocol (malformed frame)')) {
        return violation(q, ws, a, 'malformed or unknown frame');
      }
      pump(q, ws, a);
      if (q.forOthers) pumpAll(q, ws);
      await scheduleAlarm(q);
      return;
    }
    if (a.agent === null && frame.type !== FRAME.HELLO) return violation(q, ws, a, 'frame before hello');
    switch (frame.type) {
      case FRAME.HELLO:
        if (a.agent !== null) return violation(q, ws, a, 'second hello');
        if (!onHello(q, ws, a, frame)) return;
        break;
      case FRAME.CREDIT:
        a.credit = Math.min(a.credit + frame.bytes, HELD_CREDIT_BYTES);
        break;
      case FRAME.ACK:
        if (a.cursor?.id === frame.id) return violation(q, ws, a, 'ack before end of message');
        onAck(q, a, frame);
        break;
      case FRAME.NACK:
        onNack(q, a, frame);
        break;
      case FRAME.RECIPIENTS:
        onRecipients(q, a, frame);
        break;
      case FRAME.RETRY: {
        const woken = q.store.wakeAllDeferred();
        if (woken > 0) log('deferred.retry', { session: a.session, agent: a.agent, woken });
        pumpAll(q, ws);
        break;
      }
      case FRAME.BOUNCED: {
        const refused = onBounced(q, a, frame);
        if (refused !== null) rejectAnswer(q, a, frame.id, refused);
        break;
      }
    }
    pump(q, ws, a);
    if (q.forOthers) pumpAll(q, ws);
    await scheduleAlarm(q);
    await deleteBodies(q);
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    disconnect(this.#q, ws, `closed ${code} ${reason}`);
    await scheduleAlarm(this.#q);
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    disconnect(this.#q, ws, `error ${String(error)}`);
    await scheduleAlarm(this.#q);
  }

  // ---- ingest (called by the Worker's email handler over RPC) ------------------

  /**
   * Stores one message from its byte stream, in chunk rows (ingest.ts says what it answers).
   * `budgetMs`: what the call may take in all, from its start here (email()'s budget); the
   * verdict wait gets what storing left of it, so a slow store never pushes email() past Email
   * Routing's wall clock.
   */
  async ingest(
    sender: string, recipients: string[], raw: ReadableStream<Uint8Array>, maxBytes: number, sizeHint?: number, verdictWaitMs = 0,
    budgetMs = Number.POSITIVE_INFINITY,
  ): Promise<IngestResult> {
    const deadline = Date.now() + budgetMs;  // the object's own clock: no skew with the Worker's
    return ingest(this.#q, sender, recipients, chunkPath(this.#q, sender, recipients, raw, maxBytes, sizeHint), verdictWaitMs, deadline);
  }

  /** Queues one message whose body email() already stored in R2 (bodies.ts, ingest.ts storedPath). */
  async ingestStored(
    sender: string, recipients: string[], body: StoredBody, verdictWaitMs = 0, budgetMs = Number.POSITIVE_INFINITY,
  ): Promise<IngestResult> {
    const deadline = Date.now() + budgetMs;
    return ingest(this.#q, sender, recipients, storedPath(this.#q, sender, recipients, body), verdictWaitMs, deadline);
  }

  /**
   * The R2 object of message `id` while it is leased (in-flight) to `session`: the Worker's GET
   * /agent/body/<id> streams it to the agent that holds the lease. Null for any other message,
   * state or session: once the lease ends (its connection closed), a fetch that starts is
   * refused. No session (null): an agent older than `fetchSession` presents none, so a body
   * leased to such an agent is served without one; one leased to a newer agent never is.
   */
  async bodyOf(id: string, session: string | null = null): Promise<{ key: string; size: number } | null> {
    return leasedBody(this.#q, id, session);
  }

  /** Queue summary by state (admin and tests). */
  async summary(): Promise<Record<string, number>> {
    return this.#q.store.counts();
  }

  // ---- admin (the Worker's /admin routes call these after checking ADMIN_TOKEN) ----

  async adminSummary(): Promise<ShardSummary> {
    return admin.shardSummary(this.#q);
  }

  async adminList(state: State | null, limit: number): Promise<MessageRow[]> {
    return this.#q.store.list(state, limit);
  }

  async adminShow(id: string): Promise<{ message: MessageRow; header: Uint8Array } | null> {
    return admin.showMessage(this.#q.store, id);
  }

  async adminRaw(id: string): Promise<ReturnType<typeof admin.rawOf>> {
    return admin.rawOf(this.#q.store, id);
  }

  async adminChunk(id: string, seq: number): Promise<Uint8Array | null> {
    return admin.chunkOf(this.#q.store, id, seq);
  }

  async adminRetry(id: string): Promise<boolean> {
    return this.#moved(admin.retry(this.#q.store, id));
  }

  async adminReplay(id: string): Promise<{ id: string } | 'nothing-owed' | false> {
    const replayed = admin.replay(this.#q.store, id);
    if (typeof replayed === 'object') await this.#moved(true);
    return replayed;
  }

  async adminHold(id: string): Promise<boolean> {
    return admin.hold(this.#q.store, id);
  }

  async adminRelease(id: string): Promise<boolean> {
    return this.#moved(admin.release(this.#q.store, id));
  }

  async adminDelete(id: string): Promise<boolean> {
    return this.#removed(admin.deleteMessage(this.#q.store, id));
  }

  async adminFlush(): Promise<number> {
    const woken = admin.flush(this.#q.store);
    await this.#moved(true);
    return woken;
  }

  async adminPurge(id: string): Promise<boolean> {
    return this.#removed(admin.purge(this.#q.store, id));
  }

  /** After an operation that made work: the agents get it now, the alarm follows. */
  async #moved(done: boolean): Promise<boolean> {
    if (!done) return false;
    pumpAll(this.#q);
    await scheduleAlarm(this.#q);
    return true;
  }

  /** After an operation that removed a message: its body in R2 goes too. */
  async #removed(done: boolean): Promise<boolean> {
    if (done) await deleteBodies(this.#q);
    return done;
  }

  // ---- time ---------------------------------------------------------------------

  /** Tests only (TEST_CLOCK, clock.ts): fixes the queue's clock at `t`, then does what is due by then. */
  async testClock(t: number | null): Promise<void> {
    await keepTestClock(this.env, this.ctx.storage, t);
    await this.alarm();
  }

  override async alarm(): Promise<void> {
    await runAlarm(this.#q);
  }
}
