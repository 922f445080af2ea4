// The queue: one Durable Object holds every message until an agent acks it: its
// row, with its body in R2 (bodies.ts) or, without the bucket, in chunk rows.
// Written for hibernation: all per-socket state lives in the socket's
// attachment or in SQLite, so any handler may be the first after a wake-up.
import { DurableObject } from 'cloudflare:workers';
import {
  FRAME, MAX_CHUNK_BYTES, MAX_CREDIT_BYTES, MAX_RESULT_TEXT, PING, PONG, PROTOCOL_VERSION, SUPPORTED_VERSIONS,
  ackCovers, encodeFrame, frameMessageId, parseAgentFrame,
  type AckFrame, type BouncedFrame, type FailureReason, type NackFrame, type ObjectFrame, type RecipientResult, type RecipientsFrame,
} from '../protocol/wire.ts';
import { recipientKnown } from '../protocol/recipients.ts';
import { readConfig, type Env } from './env.ts';
import { storeChunks } from './chunk-path.ts';
import { hex, log, randomId } from './log.ts';
import { bounceRetryAt, delayWarningAt, failedTo, releaseDelay, retryUntil, settle, type RetryPolicy } from './queue.ts';
import { migrate, type State } from './schema.ts';
import { MessageStore, type MessageRow } from './store.ts';
import { VerdictBoard, rejectReason, type Verdict } from './verdict.ts';
import { bounceHeaders, headerSection } from './headers.ts';
import { OWNER, bodyPrefix, type StoredBody } from './bodies.ts';
import { blockVerdicts } from './cf-verdicts.ts';
import { exactDuration, mergeResults, owedOnReplay } from './owed.ts';
import { nearLimit, STORAGE_CHECK_MS, type Stored } from './storage.ts';
import { now as clock, realTime, setTestClock } from './clock.ts';

/** Per-socket state, kept small: it is serialized into the socket's attachment. */
interface Attachment {
  v: 1;
  session: string;
  /** Agent name from hello; null until the hello arrives. */
  agent: string | null;
  window: number;
  /** Bytes of chunk data the agent is ready to receive. */
  credit: number;
  /** The message being streamed to this socket, if any. */
  cursor: { id: string; seq: number; chunks: number } | null;
  /** After a shutdown nack: lease nothing more to this socket. */
  draining: boolean;
  /** When the socket was accepted: its age before the first heartbeat. */
  connectedAt?: number;
  /** Closed by us (violation, silence): leases released, never leased to again. */
  closed?: boolean;
  /** The agent's hello said it has a bounce relay: bounce tasks may go to it. */
  bounces?: boolean;
  /** Its hello said `warnings` too: delay warnings (bounce tasks with reason `delayed`) may go to it. */
  warnings?: boolean;
  /** The protocol version of the agent's hello (absent: a socket accepted before it was kept, treated as 1). */
  version?: number;
  /** The agent's hello said it fetches R2 bodies: messages stored there may go to it. */
  fetch?: boolean;
  /** Its hello said its body fetches present its session: none without it gets a body leased here. */
  fetchSession?: boolean;
}

export type IngestResult =
  /** `verdict`: the agent's answer within the wait asked for; null when none was asked for. */
  | { status: 'accepted'; id: string; duplicate: boolean; verdict: Verdict | null }
  | { status: 'too-large'; size: number }
  /** The recipients list in force does not name these: refused before anything is stored. */
  | { status: 'unknown-recipient'; recipients: string[] };

/** meta key: whether the last agent that said hello can send bounces ('1') or not ('0'). */
const AGENTS_BOUNCE = 'agents_bounce';

/** meta key: bounces (DSNs) sent since the object was created, for the metrics (GET /admin/queue). */
const BOUNCES_SENT = 'bounces_sent';
/** meta key: when this object next sums its storage (storage.ts). */
const STORAGE_CHECK_AT = 'storage_check_at';

/** meta keys of the orphan sweep: this shard's R2 prefix, when the next page is due, where the listing stands. */
const BODIES_PREFIX = 'bodies_prefix';
const SWEEP_AT = 'orphan_sweep_at';
const SWEEP_CURSOR = 'orphan_sweep_cursor';
/** R2 keys listed per sweep invocation (R2 lists at most 1,000). */
const SWEEP_PAGE = 500;
/** While a listing goes on, its next page after this long (or ORPHAN_SWEEP_MS, if shorter). */
const SWEEP_NEXT_PAGE_MS = 60_000;
/**
 * An R2 object younger than this is never an orphan: its put may have just completed and its
 * ingestStored be on its way (email() lives at most EMAIL_BUDGET_MS, 25 s).
 */
export const ORPHAN_GRACE_MS = 60 * 60_000;
/** R2 keys deleted per call (R2 takes at most 1,000). */
const MAX_DELETES = 1000;

/** An ingest that has not finished after this long crashed; its rows are removed. */
const STALE_INCOMING_MS = 60 * 60_000;
const HOUSEKEEPING_MS = 60 * 60_000;
/**
 * Chunk-path bodies (no BODIES binding, or stored before it): the credit a connection may hold
 * here, whatever its agent granted (the wire allows 64 MiB), and the chunk bytes one
 * invocation sends across every connection. ws.send has no backpressure, so what the object
 * has sent and the agent not yet read is bounded by the first, per connection; what one
 * invocation reads out of SQLite and hands to the runtime by the second (issue #15).
 */
export const HELD_CREDIT_BYTES = 8 * 1024 * 1024;
export const PUMP_BUDGET_BYTES = 4 * 1024 * 1024;

export class RelayQueue extends DurableObject<Env> {
  readonly #store: MessageStore;
  readonly #verdicts = new VerdictBoard();
  /** The recipients list in force, as a set; undefined until first needed after a wake-up. */
  #recipients: { delimiter: string; entries: Set<string> } | null | undefined;
  /** A pump stopped at its budget with credit left: the next alarm is due at once. */
  #pumpPending = false;
  /**
   * This invocation made work the answering connection may not take (a bounce task, a message
   * handed back by an agent shutting down): the other connections are pumped too.
   */
  #forOthers = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#store = new MessageStore(ctx.storage.sql);
    // Heartbeats are answered by the runtime without waking the object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING, PONG));
    void ctx.blockConcurrencyWhile(async () => {
      // Most starts are wake-ups after idling: a current schema, nothing left to recover.
      const state = this.#store.startState();
      if (state === 'clean') return;
      if (state === 'migrate') migrate(ctx.storage.sql);
      // Ingests that died with the previous instance (a restart mid-ingest): nothing will finish them.
      const orphans = this.#store.removeIncoming();
      if (orphans > 0) log('ingest.orphans-removed', { removed: orphans });
      // Leases of connections that did not survive a restart go back to the queue.
      const live = ctx.getWebSockets().map((ws) => this.#attachment(ws)?.session).filter((s) => s !== undefined);
      const released = this.#store.releaseAllExcept(live, clock() + readConfig(env).affinityMs, this.#notBefore(clock()));
      if (released.length > 0) log('lease.recovered', { released: released.length });
      this.#giveUpUnsettled(released);
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
    await this.#scheduleAlarm();
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  override async webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): Promise<void> {
    const a = this.#attachment(ws);
    if (!a) return this.#violation(ws, null, 'socket without attachment');
    if (a.closed) return;  // we closed it; its leases are already released
    if (typeof data !== 'string') return this.#violation(ws, a, 'binary frame from agent');
    const frame = parseAgentFrame(data);
    if (!frame) {
      // An answer about one message that breaks the protocol's limits affects that message only.
      const id = frameMessageId(data);
      if (id === null || a.cursor?.id === id || !this.#rejectAnswer(a, id, 'the agent\'s answer broke the wire protocol (malformed frame)')) {
        return this.#violation(ws, a, 'malformed or unknown frame');
      }
      this.#pump(ws, a);
      if (this.#forOthers) this.#pumpAll(ws);
      await this.#scheduleAlarm();
      return;
    }
    if (a.agent === null && frame.type !== FRAME.HELLO) return this.#violation(ws, a, 'frame before hello');
    switch (frame.type) {
      case FRAME.HELLO:
        if (a.agent !== null) return this.#violation(ws, a, 'second hello');
        if (!SUPPORTED_VERSIONS.includes(frame.v)) {
          log('agent.version', { session: a.session, v: frame.v });
          ws.close(1008, `protocol version ${frame.v} unsupported; this object speaks ${SUPPORTED_VERSIONS.join(' and ')}`);
          return;
        }
        a.agent = frame.agent;
        a.window = frame.window;
        a.credit = Math.min(frame.credit, HELD_CREDIT_BYTES);
        a.bounces = frame.bounces === true;
        a.warnings = a.bounces && frame.warnings === true;
        a.version = frame.v;
        a.fetch = frame.fetch === true;
        a.fetchSession = frame.fetchSession === true;
        this.#onBounceCapability(a.bounces);
        this.#send(ws, { type: FRAME.WELCOME, v: PROTOCOL_VERSION, session: a.session, window: a.window, maxChunk: MAX_CHUNK_BYTES });
        log('agent.hello', { session: a.session, agent: a.agent, window: a.window, credit: a.credit });
        break;
      case FRAME.CREDIT:
        a.credit = Math.min(a.credit + frame.bytes, HELD_CREDIT_BYTES);
        break;
      case FRAME.ACK:
        if (!this.#onAck(ws, a, frame)) return;
        break;
      case FRAME.NACK:
        this.#onNack(a, frame);
        break;
      case FRAME.RECIPIENTS:
        this.#onRecipients(a, frame);
        break;
      case FRAME.RETRY: {
        const woken = this.#store.wakeAllDeferred();
        if (woken > 0) log('deferred.retry', { session: a.session, agent: a.agent, woken });
        this.#pumpAll(ws);
        break;
      }
      case FRAME.BOUNCED:
        this.#onBounced(a, frame);
        break;
    }
    this.#pump(ws, a);
    if (this.#forOthers) this.#pumpAll(ws);
    await this.#scheduleAlarm();
    await this.#deleteBodies();
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.#disconnect(ws, `closed ${code} ${reason}`);
    await this.#scheduleAlarm();
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    this.#disconnect(ws, `error ${String(error)}`);
    await this.#scheduleAlarm();
  }

  // ---- ingest (called by the Worker's email handler over RPC) ------------------

  /**
   * Stores one message durably and returns only once it is committed: the
   * runtime holds this RPC's answer until the writes are on disk. With
   * `verdictWaitMs` > 0 it then waits that long for the agent's answer, in the
   * same call: one round trip from the Worker to the object, not two. `budgetMs`: what the
   * call may take in all, from its start here (email()'s budget); the verdict wait gets what
   * storing left of it, so a slow store never pushes email() past Email Routing's wall clock.
   */
  async ingest(
    sender: string, recipients: string[], raw: ReadableStream<Uint8Array>, maxBytes: number, sizeHint?: number, verdictWaitMs = 0,
    budgetMs = Number.POSITIVE_INFINITY,
  ): Promise<IngestResult> {
    const deadline = Date.now() + budgetMs;  // the object's own clock: no skew with the Worker's
    const unknown = this.#unknownRecipients(recipients);
    if (unknown.length > 0) {
      // Read to the end before answering, as the dev route does: a client still sending its body
      // (the local ingress with a large message) would see a reset instead of the 550, treat it as
      // a temporary failure and send again, forever.
      await raw.pipeTo(new WritableStream()).catch(() => undefined);
      log('ingest.unknown-recipient', { recipients: unknown });
      return { status: 'unknown-recipient', recipients: unknown };
    }
    const id = randomId();
    const now = clock();
    this.#store.begin(id, sender, recipients, now);
    let stored;
    try {
      stored = await storeChunks(this.#store, id, raw, maxBytes, sizeHint);
    } catch (err) {
      this.#store.remove(id);
      log('ingest.failed', { id, error: String(err) });
      throw err;
    }
    if (!stored.ok) {
      this.#store.remove(id);
      log('ingest.too-large', { id, size: stored.size, maxBytes });
      return { status: 'too-large', size: stored.size };
    }
    // The key covers the sender's message, not Cloudflare's block: a retry under a new block is one message.
    const key = await dedupeKey(sender, recipients, stored.sha256);
    const earlier = this.#store.findDuplicate(key, now - readConfig(this.env).dedupeWindowMs);
    if (earlier !== null) {
      this.#store.remove(id);
      log('ingest.duplicate', { id: earlier, size: stored.size });
      return { status: 'accepted', id: earlier, duplicate: true, verdict: await this.#verdict(earlier, waitLeft(verdictWaitMs, deadline)) };
    }
    // Cloudflare's verdicts, from its block only (cf-verdicts.ts), go to the agent with the message.
    this.#store.commit(id, stored.size, stored.sha256, stored.prefix, stored.chunks, key, stored.auth);
    if (readConfig(this.env).logLevel === 'debug') log('ingest.queued', { id, size: stored.size, body: 'chunks', chunks: stored.chunks, recipients: recipients.length });
    this.#pumpAll();
    await this.#scheduleAlarm();
    return { status: 'accepted', id, duplicate: false, verdict: await this.#verdict(id, waitLeft(verdictWaitMs, deadline)) };
  }

  /**
   * Queues one message whose body email() already stored in R2 (bodies.ts): the row is the
   * only write, committed before this returns (the runtime holds the answer until it is on
   * disk). Its id is the one in its R2 key. A duplicate (the same envelope, and R2's MD5 and
   * length of the bytes after the block) or a refused recipient keeps nothing: its R2 object
   * is deleted.
   */
  async ingestStored(
    sender: string, recipients: string[], body: StoredBody, verdictWaitMs = 0, budgetMs = Number.POSITIVE_INFINITY,
  ): Promise<IngestResult> {
    const deadline = Date.now() + budgetMs;
    const prefix = bodyPrefix(body.key);
    // Only the Worker calls this, with what putBody returned: anything else is a programmer's error.
    if (prefix === null || !Number.isSafeInteger(body.size) || !Number.isSafeInteger(body.prefix) || body.prefix < 0 || body.prefix > body.size ||
      !/^[0-9a-f]{32}$/.test(body.md5) || !(body.head instanceof Uint8Array) || body.head.byteLength < body.prefix) {
      throw new Error(`ingestStored: not a stored body: ${JSON.stringify({ key: body.key, size: body.size, prefix: body.prefix, md5: body.md5 })}`);
    }
    // The sweep lists this shard's prefix: learned from its keys (the object does not know its name).
    let sweepSet = false;
    if (this.#store.meta(BODIES_PREFIX) !== prefix) {
      this.#store.setMeta(BODIES_PREFIX, prefix);
      if (this.#store.meta(SWEEP_AT) === null) {
        this.#store.setMeta(SWEEP_AT, String(clock() + readConfig(this.env).orphanSweepMs));
        sweepSet = true;
      }
    }
    const unknown = this.#unknownRecipients(recipients);
    if (unknown.length > 0) {
      this.#store.noteBodyDelete(body.key);
      await this.#deleteBodies();
      log('ingest.unknown-recipient', { recipients: unknown });
      return { status: 'unknown-recipient', recipients: unknown };
    }
    const now = clock();
    // The key covers the sender's message, not Cloudflare's block: a retry under a new block is one message.
    const key = await dedupeKey(sender, recipients, storedDigest(body.md5, body.size - body.prefix));
    const earlier = this.#store.findDuplicate(key, now - readConfig(this.env).dedupeWindowMs);
    if (earlier !== null) {
      this.#store.noteBodyDelete(body.key);
      await this.#deleteBodies();
      log('ingest.duplicate', { id: earlier, size: body.size });
      return { status: 'accepted', id: earlier, duplicate: true, verdict: await this.#verdict(earlier, waitLeft(verdictWaitMs, deadline)) };
    }
    const id = body.key.slice(prefix.length);
    // Cloudflare's verdicts, from its block only (cf-verdicts.ts), as for messages in chunks.
    const auth = blockVerdicts(body.head.subarray(0, body.prefix));
    this.#store.insertStored(id, sender, recipients, now, body, key, auth);
    if (readConfig(this.env).logLevel === 'debug') log('ingest.queued', { id, size: body.size, body: 'r2', chunks: 0, recipients: recipients.length });
    this.#pumpAll();
    // A queued message brings no deadline of its own (nextDeadline): an alarm already set stands,
    // unless this ingest started the orphan sweep's clock or left chunks to pump.
    if (sweepSet || this.#pumpPending || (await this.ctx.storage.getAlarm()) === null) await this.#scheduleAlarm();
    return { status: 'accepted', id, duplicate: false, verdict: await this.#verdict(id, waitLeft(verdictWaitMs, deadline)) };
  }

  /**
   * The R2 object of message `id` while it is leased (in-flight) to `session`: the Worker's GET
   * /agent/body/<id> streams it to the agent that holds the lease. Null for any other message,
   * state or session: once the lease ends (its connection closed), a fetch that starts is
   * refused. No session (null): an agent older than `fetchSession` presents none, so a body
   * leased to such an agent is served without one; one leased to a newer agent never is.
   */
  async bodyOf(id: string, session: string | null = null): Promise<{ key: string; size: number } | null> {
    const msg = this.#store.get(id);
    if (!msg || msg.state !== 'in-flight' || msg.bodyKey === null || msg.leaseSession === null) return null;
    if (session !== null ? session !== msg.leaseSession : !this.#presentsNoSession(msg.leaseSession)) return null;
    return { key: msg.bodyKey, size: msg.size - msg.prefix };
  }

  /** Whether `session` is an open connection whose agent's body fetches name no session (an older agent). */
  #presentsNoSession(session: string): boolean {
    return this.ctx.getWebSockets().some((ws) => {
      const a = this.#attachment(ws);
      return a !== null && a.session === session && a.agent !== null && a.fetchSession !== true;
    });
  }

  /**
   * Deletes the R2 objects of removed messages, noted in the commit that removed them, up to
   * MAX_DELETES per call (one R2 call). The runtime sends the delete only once that commit is
   * on disk (output gate), so a body never goes before its row. One that fails stays noted:
   * the next handler or the alarm tries again. Nothing to do without a bucket.
   */
  async #deleteBodies(): Promise<void> {
    const bucket = this.env.BODIES;
    if (!bucket) return;
    const keys = this.#store.bodyDeletes(MAX_DELETES);
    if (keys.length === 0) return;
    try {
      await bucket.delete(keys);
      this.#store.bodiesDeleted(keys);
    } catch (err) {
      log('bodies.delete-failed', { keys: keys.length, error: String(err) });
    }
  }

  /**
   * The orphan sweep: R2 objects under this shard's prefix, stamped with this object's id
   * (bodies.ts OWNER), that no row owns (a put whose ingestStored never committed: email() cut
   * off, the RPC lost; a body whose delete was never noted) are deleted. One page of at most SWEEP_PAGE keys per alarm, every ORPHAN_SWEEP_MS,
   * the next page a minute later while the listing goes on; only objects older than
   * ORPHAN_GRACE_MS, so a put whose ingestStored is still on its way is never touched.
   */
  async #sweepOrphans(now: number): Promise<void> {
    const bucket = this.env.BODIES;
    const prefix = this.#store.meta(BODIES_PREFIX);
    if (!bucket || prefix === null || now < Number(this.#store.meta(SWEEP_AT) ?? 0)) return;
    const cursor = this.#store.meta(SWEEP_CURSOR);
    let page: R2Objects;
    try {
      // `include` (honoured since compatibility date 2022-08-04) is not in the pinned workers-types.
      const options: R2ListOptions & { include: 'customMetadata'[] } = {
        prefix, limit: SWEEP_PAGE, include: ['customMetadata'], ...(cursor !== null ? { cursor } : {}),
      };
      page = await bucket.list(options);
    } catch (err) {
      // A cursor R2 no longer takes starts the listing over; either way, again next round.
      this.#store.deleteMeta(SWEEP_CURSOR);
      this.#store.setMeta(SWEEP_AT, String(now + readConfig(this.env).orphanSweepMs));
      log('bodies.sweep-failed', { error: String(err) });
      return;
    }
    // Only this object's own: another deployment bound to the same bucket (a staging Worker, a
    // renamed one, wrangler dev) writes the same `<shard>/` keys for an object of another id.
    // An object with no stamp (put before stamps) is never provably ours: it is left alone.
    const me = this.ctx.id.toString();
    const mine = page.objects.filter((o) => o.customMetadata?.[OWNER] === me);
    const old = mine.filter((o) => o.uploaded.getTime() < now - ORPHAN_GRACE_MS).map((o) => o.key);
    const orphans = this.#store.unowned(old);
    for (const k of orphans) this.#store.noteBodyDelete(k);
    if (page.truncated) {
      this.#store.setMeta(SWEEP_CURSOR, page.cursor);
      this.#store.setMeta(SWEEP_AT, String(now + Math.min(SWEEP_NEXT_PAGE_MS, readConfig(this.env).orphanSweepMs)));
    } else {
      this.#store.deleteMeta(SWEEP_CURSOR);
      this.#store.setMeta(SWEEP_AT, String(now + readConfig(this.env).orphanSweepMs));
    }
    if (orphans.length > 0) log('bodies.orphans', { prefix, listed: page.objects.length, notOurs: page.objects.length - mine.length, orphans: orphans.length });
    await this.#deleteBodies();
  }

  /**
   * Waits up to `waitMs` for the agent's answer about message `id` (the email()
   * handler's synchronous verdict). Returns at once when no agent is connected;
   * null when no wait was asked for.
   */
  async #verdict(id: string, waitMs: number): Promise<Verdict | null> {
    if (waitMs <= 0) return null;
    const known = this.#verdicts.recent(id);
    if (known) return known;
    const msg = this.#store.get(id);
    if (!msg) return { kind: 'unknown' };
    if (msg.state === 'deferred' || msg.state === 'dead-letter') return { kind: msg.state };
    const online = this.ctx.getWebSockets().some((ws) => {
      const a = this.#attachment(ws);
      return a !== null && a.agent !== null && !a.draining;
    });
    if (!online) return { kind: 'offline' };
    return this.#verdicts.wait(id, waitMs);
  }

  /** Queue summary by state (admin and tests). */
  async summary(): Promise<Record<string, number>> {
    return this.#store.counts();
  }

  // ---- admin (the Worker's /admin routes call these after checking ADMIN_TOKEN) ----

  /** `oldest`: of the messages still owed (store.oldestOwed); `objectBytes`: this object's SQLite database. */
  async adminSummary(): Promise<{
    states: Record<State, number>; agents: { agent: string; session: string }[]; oldest: number | null;
    oldestByState: Record<State, number | null>; bouncesSent: number; stored: Record<State, Stored>; objectBytes: number;
  }> {
    const agents = this.ctx.getWebSockets().flatMap((ws) => {
      const a = this.#attachment(ws);
      return a && a.agent !== null && !a.closed ? [{ agent: a.agent, session: a.session }] : [];
    });
    return {
      states: this.#store.counts(), agents, oldest: this.#store.oldestOwed(),
      oldestByState: this.#store.oldestByState(), bouncesSent: Number(this.#store.meta(BOUNCES_SENT) ?? 0),
      stored: this.#store.stored(), objectBytes: this.ctx.storage.sql.databaseSize,
    };
  }

  /** At most every STORAGE_CHECK_MS: a warning once this object's use nears its share of the Free plan's storage. */
  #checkStorage(now: number, shards: number): void {
    if (now < Number(this.#store.meta(STORAGE_CHECK_AT) ?? 0)) return;
    this.#store.setMeta(STORAGE_CHECK_AT, String(now + STORAGE_CHECK_MS));
    const r2 = Object.values(this.#store.stored()).reduce((n, s) => n + s.r2Bytes, 0);
    for (const w of nearLimit(this.ctx.storage.sql.databaseSize, r2, shards)) log('storage.near-limit', { ...w, shards });
  }

  async adminList(state: State | null, limit: number): Promise<MessageRow[]> {
    return this.#store.list(state, limit);
  }

  /** One message and the raw bytes of its header section (at most 64 KiB), for display. */
  async adminShow(id: string): Promise<{ message: MessageRow; header: Uint8Array } | null> {
    const message = this.#store.get(id);
    if (!message || message.state === 'incoming') return null;
    return { message, header: headerSection(this.#store.head(id)) };
  }

  /**
   * What GET /admin/messages/<id>/raw needs before streaming: size, hash, chunk count; for a
   * body in R2, its key, MD5 and the block that goes before it.
   */
  async adminRaw(id: string): Promise<{
    size: number; sha256: string; prefix: number; chunks: number; r2: { key: string; md5: string; block: Uint8Array } | null;
  } | null> {
    const message = this.#store.get(id);
    if (!message || message.state === 'incoming') return null;
    const r2 = message.bodyKey !== null
      ? { key: message.bodyKey, md5: message.md5 ?? '', block: this.#store.head(id).slice(0, message.prefix) }
      : null;
    return { size: message.size, sha256: message.sha256, prefix: message.prefix, chunks: message.chunks, r2 };
  }

  /** One stored chunk, fetched per read so an export holds one chunk in memory; null once the message is gone. */
  async adminChunk(id: string, seq: number): Promise<Uint8Array | null> {
    const message = this.#store.get(id);
    if (!message || message.state === 'incoming' || !Number.isInteger(seq) || seq < 0 || seq >= message.chunks) return null;
    return this.#store.chunk(id, seq);
  }

  async adminRetry(id: string): Promise<boolean> {
    if (!this.#store.retryNow(id)) return false;
    log('admin.retry', { id });
    this.#pumpAll();
    await this.#scheduleAlarm();
    return true;
  }

  /** dead-letter -> queued under a new id (store.replay), owing the recipients not yet delivered; 'nothing-owed' when every one was. */
  async adminReplay(id: string): Promise<{ id: string } | 'nothing-owed' | false> {
    const msg = this.#store.get(id);
    if (!msg || msg.state !== 'dead-letter') return false;
    const owed = owedOnReplay(msg.recipients, msg.results);
    if (owed.recipients.length === 0) return 'nothing-owed';
    const as = randomId();
    if (!this.#store.replay(id, as, clock(), owed.recipients, owed.results)) return false;
    log('admin.replay', { id, as, recipients: owed.recipients.length });
    this.#pumpAll();
    await this.#scheduleAlarm();
    return { id: as };
  }

  /** Puts a queued or deferred message on hold (postsuper -h). */
  async adminHold(id: string): Promise<boolean> {
    if (!this.#store.hold(id)) return false;
    log('admin.hold', { id });
    return true;
  }

  /** Releases a held message (postsuper -H): the next agent gets it at once. */
  async adminRelease(id: string): Promise<boolean> {
    if (!this.#store.release(id)) return false;
    log('admin.release', { id });
    this.#pumpAll();
    await this.#scheduleAlarm();
    return true;
  }

  /**
   * Deletes a message from the live queue (postsuper -d): the operator's explicit decision,
   * logged with its envelope. Not one an agent holds now (in-flight, or a bounce being sent):
   * its delivery may be under way.
   */
  async adminDelete(id: string): Promise<boolean> {
    const msg = this.#store.get(id);
    if (!msg || msg.state === 'incoming' || msg.state === 'in-flight' || msg.leaseSession !== null) return false;
    this.#store.remove(id);
    log('admin.delete', { id, state: msg.state, sender: msg.sender, recipients: msg.recipients });
    await this.#deleteBodies();
    return true;
  }

  /** Every deferred message is due now (postqueue -f). Returns how many. */
  async adminFlush(): Promise<number> {
    const woken = this.#store.wakeAllDeferred();
    log('admin.flush', { woken });
    this.#pumpAll();
    await this.#scheduleAlarm();
    return woken;
  }

  /** Deletes a dead-lettered or bounced message for good. Live mail is never purged. */
  async adminPurge(id: string): Promise<boolean> {
    const msg = this.#store.get(id);
    if (!msg || (msg.state !== 'dead-letter' && msg.state !== 'bounced')) return false;
    this.#store.remove(id);
    log('admin.purge', { id, sender: msg.sender, recipients: msg.recipients.length });
    await this.#deleteBodies();
    return true;
  }

  /** Read per use, so a bad value fails the ack that needs it, loudly, not the constructor. */
  #retry(): RetryPolicy {
    return readConfig(this.env).retry;
  }

  // ---- time ---------------------------------------------------------------------

  /** Tests only (TEST_CLOCK, clock.ts): fixes the queue's clock at `t`, then does what is due by then. */
  async testClock(t: number | null): Promise<void> {
    setTestClock(this.env, t);
    await this.alarm();
  }

  override async alarm(): Promise<void> {
    // Alarms may run more than once: everything here is idempotent.
    const now = clock();
    this.#pumpPending = false;
    this.#closeSilentAgents(Date.now());  // the runtime's heartbeat times are real
    const woken = this.#store.wakeDeferred(now);
    this.#expireDue(now);
    const cfg = readConfig(this.env);
    this.#store.prune(now - cfg.dedupeWindowMs, now - STALE_INCOMING_MS, now - cfg.retentionMs);
    if (woken > 0) log('deferred.due', { woken });
    this.#checkStorage(now, cfg.shards);
    this.#pumpAll();
    await this.#deleteBodies();
    await this.#sweepOrphans(now);
    await this.#scheduleAlarm();
  }

  /**
   * A socket whose agent stopped sending heartbeats (a half-open path: the agent gone, the
   * socket not closed) is closed, so its leases go back to the queue instead of waiting on it.
   * Heartbeats are answered by the runtime; its timestamp of the last one tells.
   */
  #closeSilentAgents(now: number): void {
    const staleMs = readConfig(this.env).agentSilentMs;
    for (const ws of this.ctx.getWebSockets()) {
      const a = this.#attachment(ws);
      if (!a || a.closed) continue;
      const last = Math.max(this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0, a.connectedAt ?? now);
      if (now - last < staleMs) continue;
      log('agent.silent', { session: a.session, agent: a.agent, silentMs: now - last });
      this.#disconnect(ws, `no heartbeat for ${now - last} ms`);
    }
  }

  async #scheduleAlarm(): Promise<void> {
    const now = clock();
    const deadline = this.#store.nextDeadline(now, this.#expireAfterMs());
    let at = deadline === null ? now + HOUSEKEEPING_MS : Math.min(deadline, now + HOUSEKEEPING_MS);
    // Chunks a pump left for want of budget: at once, in an invocation of their own.
    if (this.#pumpPending) at = now;
    // While agents are connected, look for silent ones every half silence limit.
    if (this.ctx.getWebSockets().length > 0) at = Math.min(at, now + Math.max(500, readConfig(this.env).agentSilentMs / 2));
    // The orphan sweep's next page (set once this shard stored a body in R2).
    const sweepAt = this.env.BODIES ? this.#store.meta(SWEEP_AT) : null;
    if (sweepAt !== null) at = Math.min(at, Math.max(now, Number(sweepAt)));
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > realTime(at)) await this.ctx.storage.setAlarm(realTime(at));
  }

  // ---- acks -------------------------------------------------------------------------

  /** Returns false when the socket was closed for a protocol violation. */
  #onAck(ws: WebSocket, a: Attachment, frame: AckFrame): boolean {
    if (a.cursor?.id === frame.id) return this.#violation(ws, a, 'ack before end of message'), false;
    const msg = this.#store.get(frame.id);
    if (!msg || msg.state !== 'in-flight' || msg.leaseSession !== a.session) {
      // Unknown, already settled, or leased elsewhere: acks are idempotent, ignore.
      log('ack.ignored', { session: a.session, id: frame.id, state: msg?.state ?? null });
      return true;
    }
    if (!ackCovers(frame.results, msg.recipients)) {
      this.#rejectAnswer(a, msg.id, 'the agent\'s ack does not answer each recipient exactly once');
      return true;
    }
    this.#settle(msg, frame.results, tempfailText(frame));
    return true;
  }

  /**
   * An answer about message `id` the object cannot accept: the message is deferred with the
   * reason (a tempfail of every pending recipient, with the usual backoff), the connection stays.
   * False when `id` is not a message this connection holds.
   */
  #rejectAnswer(a: Attachment, id: string, why: string): boolean {
    const msg = this.#store.get(id);
    const w = this.#store.warning(id);
    if ((!msg || msg.leaseSession !== a.session) && w && w.state === 'owed' && w.leaseSession === a.session) {
      log('agent.answer-rejected', { session: a.session, id, why, warning: true });
      this.#warningLater(id, w.dueAt, why);
      return true;
    }
    if (!msg || msg.leaseSession !== a.session) return false;
    log('agent.answer-rejected', { session: a.session, id, why });
    if (msg.state === 'bouncing') {
      this.#bounceLater(msg, why);
      return true;
    }
    if (msg.state !== 'in-flight') return false;
    const results = msg.recipients.map((recipient): RecipientResult =>
      ({ recipient, code: 0, enhanced: null, text: why, outcome: 'tempfail' }));
    this.#settle(msg, results, why);
    return true;
  }

  /** Applies one attempt's per-recipient results: done, deferred or dead-letter. */
  #settle(msg: MessageRow, results: RecipientResult[], error: string): void {
    const now = clock();
    const s = settle(msg.results, results, msg.retryFrom, msg.attempts, now, this.#retry());
    const outcomes = results.map((r) => r.outcome);
    switch (s.kind) {
      case 'done': {
        // A recipient refused for good: the sender heard 250 unless email() is waiting for this
        // very verdict and turns it into its SMTP reply. Otherwise the sender gets a bounce.
        const refused = s.results.some((r) => r.outcome === 'permfail');
        const told = this.#verdicts.settled(msg.id, { kind: 'final', results: s.results }, now) > 0 && rejectReason(s.results) !== null;
        if (refused && !told) {
          this.#fail(msg, 'refused', [], s.results, error);
          break;
        }
        // Refused and told: nothing was delivered, so its key is not remembered. A copy sent again
        // (after a 4xx for another recipient, say) must be stored and answered afresh: remembered,
        // it would get the id of this message, which is gone, and a 250 once this verdict is forgotten.
        this.#store.finish(msg.id, refused ? null : this.#store.dedupeKeyOf(msg.id), now);
        // The message's one info line in the object: what ingest.queued and message.leased said too.
        log('message.acked', {
          id: msg.id, attempt: msg.attempts, outcomes, size: msg.size, body: msg.bodyKey !== null ? 'r2' : 'chunks', chunks: msg.chunks,
          recipients: msg.recipients.length, session: msg.leaseSession, ageMs: now - msg.receivedAt,
        });
        break;
      }
      case 'deferred':
        this.#store.defer(msg.id, s.pending, s.results, s.nextAttemptAt, error);
        log('message.deferred', { id: msg.id, attempt: msg.attempts, outcomes, nextAttemptAt: s.nextAttemptAt });
        this.#oweWarning(msg, results.filter((r) => r.outcome === 'tempfail'));
        this.#verdicts.settled(msg.id, { kind: 'deferred' }, now);
        break;
      case 'expired':
        this.#fail(msg, 'expired', s.pending, s.results, error);
        break;
    }
  }

  /**
   * A message failed for good: it owes its sender a bounce (bouncing) or, when none can be
   * sent, goes to dead-letter for the operator. `results` covers every recipient: final ones
   * and, for `pending` ones, the last reason they were not delivered.
   */
  #fail(msg: MessageRow, reason: FailureReason, pending: string[], results: RecipientResult[], error: string): void {
    const now = clock();
    const to = failedTo(msg.sender, this.#store.meta(AGENTS_BOUNCE) === '1');
    if (to.state === 'bouncing') this.#forOthers = true;
    const why = to.state === 'dead-letter' ? to.why : null;
    this.#store.fail(msg.id, to.state, reason, pending, results, error, why, now);
    // Not silent: a warning with everything an operator needs to find it (relayctl show <id>).
    log('message.failed', {
      id: msg.id, reason, state: to.state, attempt: msg.attempts, sender: msg.sender,
      failed: results.filter((r) => r.outcome !== 'delivered').map((r) => `${r.recipient} ${r.code} ${r.text.slice(0, 200)}`),
      ...(why !== null ? { why } : {}),
    });
    this.#verdicts.settled(msg.id, { kind: 'dead-letter' }, now);
  }

  /**
   * How long after its retry clock starts a message that waits (queued, deferred) expires from
   * the alarm: MAX_AGE_MS and one minimal backoff more, the grace #pump gives the last attempt
   * that settle() schedules at the limit. The same whether or not an agent is connected, so an
   * agent that comes and goes does not move a message's end.
   */
  #expireAfterMs(): number {
    const retry = this.#retry();
    return retry.maxAgeMs + retry.firstRetryMs;
  }

  /** Fails every waiting message (queued, deferred) whose age ran out by `now`. */
  #expireDue(now: number): void {
    for (const m of this.#store.owedSince(now - this.#expireAfterMs())) this.#expire(m);
  }

  /** Undelivered within MAX_AGE_MS of its retry clock: given up, its pending recipients failed with this text. */
  #expire(msg: MessageRow): void {
    const text = `delivery given up: not delivered within ${exactDuration(this.#retry().maxAgeMs)}`;
    this.#fail(msg, 'expired', msg.recipients, mergeResults(msg.results, this.#unanswered(msg, text)), text);
  }

  /** `results` for recipients that never got a final answer: they failed with this text. */
  #unanswered(msg: MessageRow, text: string): RecipientResult[] {
    const final = new Set(msg.results.map((r) => r.recipient));
    const last = (r: string): string => msg.lastError?.includes(r) ? `${text}; last error: ${msg.lastError}` : text;
    return msg.recipients.filter((r) => !final.has(r)).map((recipient): RecipientResult =>
      ({ recipient, code: 0, enhanced: null, text: last(recipient).slice(0, MAX_RESULT_TEXT), outcome: 'tempfail' }));
  }

  /** Messages whose lease ended unanswered too often in a row are given up: a bounce, not a loop. */
  #giveUpUnsettled(released: MessageRow[]): void {
    const max = readConfig(this.env).maxUnsettledLeases;
    for (const m of released) {
      if (m.leaseEnds < max) continue;
      const text = `delivery given up: ${m.leaseEnds} attempts in a row ended without an answer from the agent`;
      this.#fail(m, 'attempts', m.recipients, [...m.results, ...this.#unanswered(m, text)], text);
    }
  }

  /** When released messages may be leased again, by how often in a row their lease ended unanswered. */
  #notBefore(now: number): (leaseEnds: number) => number {
    return (n) => {
      const d = releaseDelay(n);
      return d > 0 ? now + d : 0;
    };
  }

  // ---- bounces and the recipients list -------------------------------------------

  /** Remembers whether agents can bounce; when they cannot, owed bounces go to the operator. */
  #onBounceCapability(bounces: boolean): void {
    this.#store.setMeta(AGENTS_BOUNCE, bounces ? '1' : '0');
    if (bounces) return;
    for (const id of this.#store.idleBounces()) {
      this.#store.bounceFailed(id, 'no bounce: the agent has no bounce relay configured');
      log('bounce.impossible', { id, why: 'the agent has no bounce relay configured' });
    }
  }

  #onBounced(a: Attachment, frame: BouncedFrame): void {
    // A warning and a bounce of one message are never out at once (store.nextBounce): the id tells.
    const w = this.#store.warning(frame.id);
    if (w && w.state === 'owed' && w.leaseSession === a.session) return this.#onWarned(a, frame, w.dueAt);
    const msg = this.#store.get(frame.id);
    if (!msg || msg.state !== 'bouncing' || msg.leaseSession !== a.session) {
      log('bounced.ignored', { session: a.session, id: frame.id, state: msg?.state ?? null });
      return;
    }
    if (frame.results !== undefined && !this.#foundDelivered(a, msg, frame.results, frame.status === 'delivered')) return;
    const reply = `${frame.code} ${frame.text}`.slice(0, MAX_RESULT_TEXT);
    switch (frame.status) {
      case 'delivered':
        // Its ack was lost, not its delivery: settled as acked (row and body gone), no DSN.
        this.#store.finish(msg.id, this.#store.dedupeKeyOf(msg.id), clock());
        log('message.acked', {
          id: msg.id, failure: msg.failure, foundAt: 'bounce', reply,
          results: mergeResults(msg.results, frame.results ?? []).map((r) => `${r.recipient} ${r.outcome} ${r.code}`),
        });
        break;
      case 'sent':
        this.#store.bounced(msg.id, `sent: ${reply}`, clock());
        this.#store.setMeta(BOUNCES_SENT, String(Number(this.#store.meta(BOUNCES_SENT) ?? 0) + 1));
        log('bounce.sent', { id: msg.id, sender: msg.sender, reason: msg.failure, reply });
        break;
      case 'deferred':
        this.#bounceLater(msg, reply);
        break;
      case 'failed':
        this.#store.bounceFailed(msg.id, `bounce refused: ${reply}`);
        log('bounce.failed', { id: msg.id, sender: msg.sender, reply });
        break;
    }
  }

  /**
   * A bounce task's recipients the agent found delivered (its journal, or Dovecot): kept in the
   * message's results, out of any later task. False (the bounce deferred) when they are not
   * recipients of the task, or, with `all`, not every one of them.
   */
  #foundDelivered(a: Attachment, msg: MessageRow, found: RecipientResult[], all: boolean): boolean {
    const owed = msg.results.filter((r) => r.outcome !== 'delivered').map((r) => r.recipient);
    const known = new Set(owed);
    const seen = new Set<string>();
    const fits = found.every((r) => known.has(r.recipient) && !seen.has(r.recipient) && seen.add(r.recipient));
    if (!fits || (all && !ackCovers(found, owed))) {
      this.#rejectAnswer(a, msg.id, `the agent's bounced answer names recipients that are not ${all ? 'exactly those' : 'among those'} of the bounce task`);
      return false;
    }
    this.#store.setResults(msg.id, msg.recipients.filter((r) => !seen.has(r)), mergeResults(msg.results, found));
    log('bounce.found-delivered', { id: msg.id, failure: msg.failure, recipients: found.map((r) => r.recipient), all });
    return true;
  }

  /**
   * A deferred message owes its sender one delay warning once DELAY_WARNING_MS have passed
   * (recorded now, offered from then on by #pump while it is still deferred). `tempfails`: the
   * pending recipients' replies, refreshed at each deferral until the warning goes out.
   */
  #oweWarning(msg: MessageRow, tempfails: RecipientResult[]): void {
    const at = delayWarningAt(msg.sender, msg.retryFrom, readConfig(this.env).delayWarningMs);
    if (at !== null && tempfails.length > 0) this.#store.oweWarning(msg.id, at, tempfails);
  }

  /** The agent's answer about a delay warning: the message itself is not touched, whatever it says. */
  #onWarned(a: Attachment, frame: BouncedFrame, dueAt: number): void {
    const reply = `${frame.code} ${frame.text}`.slice(0, MAX_RESULT_TEXT);
    switch (frame.status) {
      case 'sent':
        this.#store.settleWarning(frame.id, 'sent', `sent: ${reply}`);
        log('warning.sent', { id: frame.id, session: a.session, reply });
        break;
      case 'deferred':
        this.#warningLater(frame.id, dueAt, reply);
        break;
      case 'failed':
      case 'delivered':  // never the answer to a warning: taken as a refusal, not offered again
        // A courtesy only: the message goes on being retried, the operator sees a warning in the log.
        this.#store.settleWarning(frame.id, 'failed', `refused: ${reply}`);
        log('warning.failed', { id: frame.id, session: a.session, reply });
        break;
    }
  }

  /** A warning that could not go out now: offered again later, while its message is still deferred. */
  #warningLater(id: string, dueAt: number, why: string): void {
    const at = bounceRetryAt(dueAt, clock(), this.#retry());
    this.#store.settleWarning(id, 'owed', `deferred: ${why}`, at);
    log('warning.deferred', { id, why, nextAttemptAt: at });
  }

  /** A bounce that could not go out now: again later, for as long as a message is retried. */
  #bounceLater(msg: MessageRow, why: string): void {
    const now = clock();
    const since = msg.settledAt ?? now;
    const retry = this.#retry();
    if (now - since >= retry.maxAgeMs) {
      this.#store.bounceFailed(msg.id, `bounce not sent within ${exactDuration(retry.maxAgeMs)}: ${why}`);
      log('bounce.failed', { id: msg.id, sender: msg.sender, why });
      return;
    }
    const at = bounceRetryAt(since, now, retry);
    this.#store.bounceLater(msg.id, `deferred: ${why}`, at);
    log('bounce.deferred', { id: msg.id, why, nextAttemptAt: at });
  }

  #onRecipients(a: Attachment, frame: RecipientsFrame): void {
    const list = this.#store.putRecipientPart(a.session, frame, clock());
    if (list === 'incomplete') return;
    this.#recipients = list === null ? null : { delimiter: list.delimiter, entries: new Set(list.entries) };
    log('recipients.published', { session: a.session, agent: a.agent, digest: frame.digest.slice(0, 12), entries: list?.entries.length ?? 0 });
  }

  /** Recipients the list in force does not name; none when no list is in force. */
  #unknownRecipients(recipients: string[]): string[] {
    if (this.#recipients === undefined) {
      const list = this.#store.recipients();
      this.#recipients = list === null ? null : { delimiter: list.delimiter, entries: new Set(list.entries) };
    }
    const known = this.#recipients;
    return known === null ? [] : recipients.filter((r) => !recipientKnown(known.entries, known.delimiter, r));
  }

  #onNack(a: Attachment, frame: NackFrame): void {
    const msg = this.#store.get(frame.id);
    if (!msg || msg.state !== 'in-flight' || msg.leaseSession !== a.session) {
      log('nack.ignored', { session: a.session, id: frame.id });
      return;
    }
    // The agent stops reading this message's chunks; stop sending them.
    if (a.cursor?.id === frame.id) a.cursor = null;
    const error = `nack ${frame.reason}: ${frame.text}`;
    log('message.nacked', { id: msg.id, session: a.session, reason: frame.reason });
    if (frame.reason === 'shutdown') {
      // Not the message's fault: the next connection gets it at once.
      a.draining = true;
      this.#store.requeue(msg.id, error);
      // Its age may have run out while it was leased: it fails now, not at the next alarm.
      this.#expireDue(clock());
      this.#forOthers = true;
      return;
    }
    // corrupt / unavailable may repeat (bad stored bytes, a full disk at home): retry with
    // the same backoff as a tempfail, never in a tight loop, and dead-letter after 5 days.
    const results = msg.recipients.map((recipient): RecipientResult =>
      ({ recipient, code: 0, enhanced: null, text: error.slice(0, 1000), outcome: 'tempfail' }));
    this.#settle(msg, results, error);
  }

  // ---- pushing --------------------------------------------------------------------

  #pumpAll(except?: WebSocket): void {
    this.#forOthers = false;
    const budget = { bytes: PUMP_BUDGET_BYTES };
    for (const ws of this.ctx.getWebSockets()) {
      if (ws === except) continue;
      const a = this.#attachment(ws);
      if (a && a.agent !== null && !a.closed) this.#pump(ws, a, budget);
    }
  }

  /**
   * Sends what this socket has room for: chunks of the current message while
   * credit lasts (ws.send has no backpressure: credit is our flow control) and the
   * invocation's chunk budget, shared by every socket it pumps, lasts; then leases the next
   * queued message if the window allows. Chunks left for want of budget go in an alarm set
   * for now (#scheduleAlarm), which pumps again.
   */
  #pump(ws: WebSocket, a: Attachment, budget = { bytes: PUMP_BUDGET_BYTES }): void {
    try {
      for (;;) {
        if (a.cursor) {
          const c = a.cursor;
          while (a.credit > 0 && budget.bytes > 0 && c.seq < c.chunks) {
            const data = this.#store.chunk(c.id, c.seq);
            ws.send(data);
            a.credit -= data.byteLength;
            budget.bytes -= data.byteLength;
            c.seq++;
          }
          if (c.seq < c.chunks) {
            // Out of budget with credit left: the alarm goes on where this stopped.
            if (a.credit > 0) this.#pumpPending = true;
            break;
          }
          this.#send(ws, { type: FRAME.END, id: c.id, chunks: c.chunks });
          a.cursor = null;
        }
        if (a.draining || this.#store.countLeased(a.session) >= a.window) break;
        const now = clock();
        const bounce = a.bounces ? this.#store.nextBounce(now) : null;
        if (bounce) {
          this.#store.leaseBounce(bounce.id, a.session);
          this.#send(ws, {
            type: FRAME.BOUNCE, id: bounce.id, sender: bounce.sender, receivedAt: bounce.receivedAt, reason: bounce.failure ?? 'refused',
            results: bounce.results.filter((r) => r.outcome !== 'delivered'),
            headers: this.#bounceHeaders(bounce.id),
          });
          continue;
        }
        // A delay warning rides on the bounce frame; it leases the warning, never the message.
        const warning = a.warnings && readConfig(this.env).delayWarningMs > 0 ? this.#store.nextWarning(now) : null;
        if (warning) {
          const m = warning.message;
          this.#store.leaseWarning(m.id, a.session);
          this.#send(ws, {
            type: FRAME.BOUNCE, id: m.id, sender: m.sender, receivedAt: m.receivedAt, reason: 'delayed',
            results: warning.results, retryUntil: retryUntil(m.retryFrom, this.#retry()),
            headers: this.#bounceHeaders(m.id),
          });
          log('warning.leased', { id: m.id, session: a.session, sender: m.sender, ageMs: now - m.receivedAt });
          continue;
        }
        // A v1 agent hashes every byte: it gets only messages whose sha256 covers them all.
        // Only an agent that said `fetch` gets messages whose body is in R2.
        const next = this.#store.nextQueued(a.agent ?? '', now, (a.version ?? 1) >= 2, a.fetch === true);
        if (!next) break;
        // The age limit holds at every lease, not only when an attempt settles (the grace of one
        // minimal backoff lets the last attempt, which settle() schedules at the limit, run).
        const retry = this.#retry();
        if (now - next.retryFrom >= retry.maxAgeMs + retry.firstRetryMs) {
          this.#expire(next);
          continue;
        }
        // Never a lease that asks for nothing: with no recipient owed, the message is settled as it stands.
        if (next.recipients.length === 0) {
          this.#settle(next, [], 'no recipient owed');
          continue;
        }
        this.#store.lease(next.id, a.session, a.agent ?? '');
        // A body in R2: the agent fetches it through the Worker, no chunk passes through here.
        const body = next.bodyKey !== null
          ? { fetch: { md5: next.md5 ?? '', block: base64(this.#store.head(next.id).subarray(0, next.prefix)) } }
          : { sha256: next.sha256 };
        this.#send(ws, {
          type: FRAME.MESSAGE, id: next.id, attempt: next.attempts + 1, sender: next.sender,
          recipients: next.recipients, size: next.size, receivedAt: next.receivedAt, ...body,
          ...(next.auth ? { auth: next.auth } : {}),
          ...(next.prefix > 0 ? { prefix: next.prefix } : {}),
        });
        if (readConfig(this.env).logLevel === 'debug') log('message.leased', { id: next.id, session: a.session, attempt: next.attempts + 1, size: next.size });
        if (next.bodyKey === null) a.cursor = { id: next.id, seq: 0, chunks: next.chunks };
      }
    } catch (err) {
      // A send on a socket that is going away: its close handler releases the leases.
      log('pump.failed', { session: a.session, error: String(err) });
    }
    ws.serializeAttachment(a);
  }

  /** The header section a DSN quotes: from the row's head (a body in R2) or the first chunk. */
  #bounceHeaders(id: string): string {
    const head = this.#store.head(id);
    return head.byteLength > 0 ? bounceHeaders(headerSection(head)) : '';
  }

  #send(ws: WebSocket, frame: ObjectFrame): void {
    ws.send(encodeFrame(frame));
  }

  #attachment(ws: WebSocket): Attachment | null {
    const a: unknown = ws.deserializeAttachment();
    return typeof a === 'object' && a !== null && (a as Attachment).v === 1 ? (a as Attachment) : null;
  }

  #disconnect(ws: WebSocket, why: string): void {
    const a = this.#attachment(ws);
    if (a) log('agent.disconnected', { session: a.session, agent: a.agent, why, released: this.#retire(ws, a) });
    try {
      ws.close(1000, 'bye');
    } catch {
      // already closed
    }
    this.#pumpAll(ws);
  }

  #violation(ws: WebSocket, a: Attachment | null, why: string): void {
    log('agent.violation', { session: a?.session ?? null, why });
    ws.close(1008, why);
    if (a) this.#retire(ws, a);
  }

  /** A socket we are done with: never leased to again, its messages back in the queue. */
  #retire(ws: WebSocket, a: Attachment): number {
    // A closed socket can stay in getWebSockets() until its TCP connection ends: mark it so no
    // pump leases to it again.
    a.closed = true;
    a.cursor = null;
    ws.serializeAttachment(a);
    this.#store.dropRecipientParts(a.session);
    // Its own agent may have delivered them (the ack lost on the way): give it the first
    // chance to answer from its journal before another agent delivers them again.
    const now = clock();
    const released = this.#store.releaseSession(a.session, now + readConfig(this.env).affinityMs, this.#notBefore(now));
    this.#giveUpUnsettled(released);
    return released.length;
  }
}

/**
 * The verdict wait asked for, cut to what is left before `deadline`. A wait that was asked for
 * but has no time left is 1 ms: a verdict already known is still given, nothing is waited for.
 */
function waitLeft(asked: number, deadline: number): number {
  return asked <= 0 ? 0 : Math.max(1, Math.min(asked, deadline - Date.now()));
}

function tempfailText(frame: AckFrame): string {
  return frame.results.filter((r) => r.outcome !== 'delivered').map((r) => `${r.recipient}: ${r.code} ${r.text}`).join('; ');
}

/**
 * `digest`: of the sender's message, the bytes after Cloudflare's block: its sha256 (storeChunks)
 * or, for a body in R2, storedDigest() (a different key space: the two never match).
 */
async function dedupeKey(sender: string, recipients: string[], digest: string): Promise<string> {
  const text = `${sender}\n${recipients.join('\n')}\n${digest}`;
  return hex(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));
}

/** Base64 of a few KiB (Cloudflare's block for the message frame). */
function base64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.byteLength; i += 0x2000) s += String.fromCharCode(...bytes.subarray(i, i + 0x2000));
  return btoa(s);
}

/**
 * What the dedupe key takes of a body in R2: R2's MD5 of it (R2 computes it; no JS touches a
 * byte) and its length. docs/architecture.md, "Duplicates", says why MD5 is enough here.
 */
function storedDigest(md5: string, bytes: number): string {
  return `md5:${md5}:${bytes}`;
}
