// One WebSocket connection to the queue object: handshake, frames in and out,
// credit, heartbeat. Deliveries run in parallel (up to the window); each is
// answered with an ack only after its end frame (or its fetched body's end,
// body-fetch.ts) and its final LMTP replies.
import WebSocket from 'ws';
import {
  FRAME, MAX_RESULT_TEXT, PING, PONG, PROTOCOL_VERSION, encodeFrame, parseObjectFrame, refusedObjectFrame,
  type AgentFrame, type BounceFrame, type BouncedFrame, type MessageFrame, type RecipientResult, type RecipientsFrame,
} from '../../protocol/wire.ts';
import type { AgentConfig } from '../agent-config.ts';
import type { Delivered } from '../delivery/deliver.ts';
import { fetchBody, type FetchLimits } from './body-fetch.ts';
import { InboundMessage } from './inbound.ts';
import type { Logger } from '../ops/log.ts';
import { relayed } from './reclaim.ts';

/** Delivers one message. Throws only for a local fault (then the message is handed back). */
export type Deliver = (msg: InboundMessage) => Promise<Delivered>;

/**
 * How a message left this connection: acked after an LMTP delivery, acked from the journal,
 * nacked (corrupt transfer, local fault, shutdown), or not answered because the socket was gone.
 */
export type SessionOutcome = 'acked' | 'journal' | 'corrupt' | 'unavailable' | 'shutdown' | 'disconnected';
export const SESSION_OUTCOMES: readonly SessionOutcome[] = ['acked', 'journal', 'corrupt', 'unavailable', 'shutdown', 'disconnected'];

export interface Settled {
  id: string;
  attempt: number;
  recipients: number;
  /** The envelope, for the per-recipient log lines: sender ('' = <>) and recipients in order. */
  sender: string;
  to: readonly string[];
  /** When the Worker accepted the message, ms since the epoch (the Worker's clock). */
  receivedAt: number;
  /** The message's size (trace header not counted). */
  bytes: number;
  /** From the message frame to the answer. */
  ms: number;
  outcome: SessionOutcome;
  /** Per-recipient results, when a delivery ran to its end. */
  results: RecipientResult[] | null;
  error: string | null;
  note: Record<string, unknown>;
}

export interface SessionEnd {
  code: number;
  reason: string;
  /** The agent dropped the connection because the heartbeat went unanswered. */
  heartbeatLost: boolean;
  /** The object closed it with 1008: it refused a frame of ours (not the agent refusing one of the object's). */
  refusedByObject: boolean;
  /** Messages answered with an ack on it (delivered or answered from the journal; any result). */
  acks: number;
}

interface Active {
  inbound: InboundMessage;
  started: number;
  /** A nack shutdown went out: whatever the delivery does now, no ack follows. */
  handedBack: boolean;
}

/** What a session needs from the agent beyond deliveries (protocol v2). */
export interface SessionHooks {
  /** The recipients list, published right after each welcome. */
  recipients?: () => readonly RecipientsFrame[];
  /** Runs a bounce task; set only with a bounce relay (then hello says `bounces`). Never rejects. */
  bounce?: (task: BounceFrame) => Promise<BouncedFrame>;
  /** Timeouts of a body fetch (messages in R2); unset: body-fetch.ts's FETCH_LIMITS. */
  fetchLimits?: FetchLimits;
}

/** After the grace period, how long handed-back deliveries get to unwind (and journal a late 250). */
export const HAND_BACK_MS = 5_000;
/** Missed heartbeat intervals (no frame at all from the object) before the socket is dropped. */
const MISSED_BEATS = 3;

export class AgentSession {
  readonly #cfg: AgentConfig;
  readonly #deliver: Deliver;
  readonly #log: Logger;
  readonly #onSettled: (s: Settled) => void;
  readonly #ws: WebSocket;
  #session: string | null = null;
  #current: InboundMessage | null = null;
  /** After a nack mid-stream, chunks of that message still on the wire are dropped. */
  #discarding = false;
  #pendingGrant = 0;
  #lastSeen = Date.now();
  #pinger: NodeJS.Timeout | null = null;
  #deadline: NodeJS.Timeout | null = null;
  #heartbeatLost = false;
  /** The agent itself closed the session for a frame of the object's it cannot take. */
  #violated = false;
  #acks = 0;
  #stopping = false;
  #closed = false;
  readonly #active = new Map<Promise<void>, Active>();
  readonly #hooks: SessionHooks;
  /** Bounce tasks running; like messages, they count against the window until answered. */
  readonly #bounces = new Set<Promise<void>>();
  readonly closed: Promise<SessionEnd>;
  readonly ready: Promise<string>;

  constructor(cfg: AgentConfig, deliver: Deliver, log: Logger, onSettled: (s: Settled) => void = () => {}, hooks: SessionHooks = {}) {
    this.#cfg = cfg;
    this.#hooks = hooks;
    this.#deliver = deliver;
    this.#log = log;
    this.#onSettled = onSettled;
    this.#ws = new WebSocket(cfg.workerUrl, {
      headers: { Authorization: `Bearer ${cfg.token}` },
      maxPayload: 2 * 1024 * 1024,
      // Mail is mostly compressed already (base64 of images, archives), and deflating each
      // 1 MiB chunk costs the object and the agent more CPU than the bytes saved on the wire.
      perMessageDeflate: false,
      // A path that swallows the upgrade (half-open network) must not hold the reconnect loop long.
      handshakeTimeout: 10_000,
    });
    let readyOk: (s: string) => void = () => {};
    let readyFail: (e: Error) => void = () => {};
    this.ready = new Promise((res, rej) => { readyOk = res; readyFail = rej; });
    this.ready.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.#ws.on('close', (code, reason) => {
        this.#closed = true;
        if (this.#pinger) clearInterval(this.#pinger);
        if (this.#deadline) clearTimeout(this.#deadline);
        this.#current?.fail('connection closed');
        this.#current = null;
        // Body fetches still running stop too: their lease ended with the socket, and the object
        // may lease the message to another agent once its affinity runs out.
        for (const d of this.#active.values()) if (d.inbound.header.fetch) d.inbound.fail('connection closed');
        const end: SessionEnd = {
          code, reason: reason.toString('utf8'), heartbeatLost: this.#heartbeatLost,
          refusedByObject: code === 1008 && !this.#violated, acks: this.#acks,
        };
        readyFail(new Error(`connection closed before welcome: ${end.code} ${end.reason}`));
        resolve(end);
      });
    });
    // Before the welcome, an error only fails `ready`: the agent's reconnect loop logs a
    // streak of failed attempts once (agent.ts), not each attempt.
    this.#ws.on('error', (err) => {
      if (this.#session !== null) this.#log('ws.error', { session: this.#session, error: err.message });
      readyFail(err);
    });
    this.#ws.on('unexpected-response', (_req, res) => {
      readyFail(new Error(`upgrade refused: HTTP ${res.statusCode}`));
      this.#ws.terminate();
    });
    this.#ws.on('open', () => {
      this.#send({
        type: FRAME.HELLO, v: PROTOCOL_VERSION, agent: cfg.name, window: cfg.concurrency, credit: cfg.creditBytes,
        // With a bounce relay it sends delay warnings too (`bounce` tasks with reason `delayed`).
        ...(hooks.bounce ? { bounces: true, warnings: true } : {}),
        // It fetches bodies stored in R2 itself (body-fetch.ts): the object leases those only to such agents.
        fetch: true,
        // And names its session on each body fetch: a body leased to it goes to no other fetch.
        fetchSession: true,
      });
      this.#lastSeen = Date.now();
      this.#pinger = setInterval(() => { if (this.#ws.readyState === WebSocket.OPEN) this.#ws.send(PING); }, cfg.heartbeatMs);
      // A silently dead path (NAT state gone, packets dropped) never closes the socket by itself.
      // Any frame from the object proves it alive; none for MISSED_BEATS intervals means dead.
      this.#deadline = setTimeout(() => this.#lost(), MISSED_BEATS * cfg.heartbeatMs);
    });
    this.#ws.on('message', (data, isBinary) => {
      this.#lastSeen = Date.now();
      this.#deadline?.refresh();
      // ws hands us a Buffer (binaryType 'nodebuffer'): no copy.
      const buf = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
      if (isBinary) return this.#onChunk(buf);
      const text = buf.toString('utf8');
      if (text === PONG) return;
      const frame = parseObjectFrame(text);
      if (!frame) return this.#onRefused(text);
      switch (frame.type) {
        case FRAME.WELCOME:
          if (this.#session !== null) return this.#violation('second welcome');
          this.#session = frame.session;
          this.#log('session.ready', { session: frame.session, window: frame.window });
          readyOk(frame.session);
          // Every connection (each shard's too) gets the list: the object may have none yet, or an old one.
          this.publishRecipients(this.#hooks.recipients?.() ?? []);
          return;
        case FRAME.MESSAGE:
          return this.#onMessage(frame);
        case FRAME.END:
          if (this.#discarding) {
            this.#discarding = false;
            return;
          }
          if (!this.#current || this.#current.header.id !== frame.id) return this.#violation('end for a message not being sent');
          this.#current.end();
          this.#current = null;
          return;
        case FRAME.BOUNCE:
          return this.#onBounce(frame);
      }
    });
  }

  get inFlight(): number {
    return this.#active.size;
  }

  /** Welcomed and not closed. */
  get up(): boolean {
    return this.#session !== null && !this.#closed;
  }

  /** Sends the recipients list (its frames in order), if welcomed and still open. */
  publishRecipients(frames: readonly RecipientsFrame[]): void {
    if (!this.up) return;
    for (const f of frames) this.#send(f);
  }

  /** Tells the object the delivery target answers again: try deferred messages now. */
  retry(): boolean {
    return this.up && this.#send({ type: FRAME.RETRY });
  }

  // A bounce task needs no chunks and does not touch #current: it may arrive between a
  // message's chunks without disturbing their stream.
  #onBounce(task: BounceFrame): void {
    if (this.#session === null) return this.#violation('bounce before welcome');
    const run = this.#hooks.bounce;
    if (this.#stopping || !run) {
      // Never sent to an agent whose hello had no `bounces`; stopping, it is handed back for later.
      const text = this.#stopping ? 'agent stopping' : 'this agent has no bounce relay';
      this.#send({ type: FRAME.BOUNCED, id: task.id, status: 'deferred', code: 0, text });
      return;
    }
    const job: Promise<void> = run(task)
      .then((answer) => { this.#send(answer); })
      .finally(() => this.#bounces.delete(job));
    this.#bounces.add(job);
  }

  /**
   * A text frame that failed to parse. One that names a message is answered for that message
   * alone, and the session goes on (issue #22: a replayed message with no recipients closed
   * every session it was leased on, and the others leased with it were given up): a message is
   * nacked `corrupt` with the reason (the object defers it with the usual backoff) and its
   * chunks are dropped; a bounce task is answered `deferred`; an end fails its transfer (then
   * nacked `corrupt` as well). Only a frame that names no message breaks the session.
   */
  #onRefused(text: string): void {
    const r = refusedObjectFrame(text);
    if (r === null) return this.#violation('malformed or unknown frame');
    if (this.#session === null) return this.#violation(`${r.type} before welcome`);
    const why = `${r.type} frame refused: ${r.why}`;
    this.#log('frame.refused', { session: this.#session, id: r.id, type: r.type, why });
    switch (r.type) {
      case 'message': {
        if (this.#current) return this.#violation('message while another is being sent');
        this.#send({ type: FRAME.NACK, id: r.id, reason: 'corrupt', text: why });
        // Chunks may follow (unless its body was to be fetched): dropped, their credit given back.
        this.#discarding = true;
        const e = r.envelope;
        this.#onSettled({
          id: r.id, attempt: e.attempt, recipients: e.recipients.length, bytes: e.size, ms: 0,
          sender: e.sender, to: e.recipients, receivedAt: e.receivedAt,
          outcome: 'corrupt', results: null, error: why, note: {},
        });
        return;
      }
      case 'bounce':
        this.#send({ type: FRAME.BOUNCED, id: r.id, status: 'deferred', code: 0, text: why });
        return;
      case 'end':
        if (this.#discarding) {
          this.#discarding = false;
          return;
        }
        if (!this.#current || this.#current.header.id !== r.id) return this.#violation('end for a message not being sent');
        this.#current.fail(why);
        this.#current = null;
        return;
    }
  }

  #onMessage(header: MessageFrame): void {
    if (this.#session === null) return this.#violation('message before welcome');
    if (this.#current) return this.#violation('message while another is being sent');
    this.#discarding = false;
    if (this.#stopping) {
      // Hand it straight back; its chunks already on the wire are dropped.
      this.#send({ type: FRAME.NACK, id: header.id, reason: 'shutdown', text: 'agent stopping' });
      this.#discarding = header.fetch === undefined;  // a fetched body sends no chunks to drop
      this.#onSettled({
        id: header.id, attempt: header.attempt, recipients: header.recipients.length, bytes: header.size, ms: 0,
        sender: header.sender, to: header.recipients, receivedAt: header.receivedAt,
        outcome: 'shutdown', results: null, error: null, note: {},
      });
      return;
    }
    let inbound: InboundMessage;
    if (header.fetch) {
      // Its body comes over HTTP, not as chunks on this socket: no credit, no end frame. The
      // bytes still count towards the agent's memory reclaim (reclaim.ts), as chunks do in #grant.
      inbound = new InboundMessage(header, relayed);
      void fetchBody(this.#cfg.workerUrl, this.#cfg.token, inbound, this.#hooks.fetchLimits, this.#session);
    } else {
      inbound = new InboundMessage(header, (n) => this.#grant(n));
      this.#current = inbound;
    }
    const active: Active = { inbound, started: Date.now(), handedBack: false };
    const task: Promise<void> = this.#run(active).finally(() => this.#active.delete(task));
    this.#active.set(task, active);
  }

  async #run(d: Active): Promise<void> {
    const { inbound } = d;
    const h = inbound.header;
    let delivered: Delivered | null = null;
    let error: string | null = null;
    try {
      delivered = await this.#deliver(inbound);
    } catch (err) {
      // A local fault (e.g. the journal's disk): hand the message back, never ack.
      error = err instanceof Error ? err.message : String(err);
    } finally {
      inbound.abandon();
    }
    await inbound.ended;
    if (d.handedBack) {
      // Reported when its nack went out. If Dovecot answered after all, the journal has it.
      if (delivered) this.#log('deliver.after-hand-back', { id: h.id, results: delivered.results.map((r) => `${r.outcome}:${r.code}`) });
      return;
    }
    let outcome: SessionOutcome;
    if (this.#ws.readyState !== WebSocket.OPEN) outcome = 'disconnected';
    else if (delivered === null) {
      this.#send({ type: FRAME.NACK, id: h.id, reason: 'unavailable', text: (error ?? '').slice(0, MAX_RESULT_TEXT) });
      outcome = 'unavailable';
    } else if (inbound.failure) {
      error = inbound.failure.message;
      this.#send({ type: FRAME.NACK, id: h.id, reason: 'corrupt', text: error.slice(0, MAX_RESULT_TEXT) });
      outcome = 'corrupt';
    } else {
      if (this.#send({ type: FRAME.ACK, id: h.id, results: delivered.results })) this.#acks++;
      outcome = delivered.fromJournal ? 'journal' : 'acked';
    }
    this.#onSettled({
      id: h.id, attempt: h.attempt, recipients: h.recipients.length, bytes: h.size, ms: Date.now() - d.started,
      sender: h.sender, to: h.recipients, receivedAt: h.receivedAt,
      outcome, results: delivered?.results ?? null, error: error ?? inbound.failure?.message ?? null, note: delivered?.note ?? {},
    });
  }

  /** Gives an in-flight message back to the object (nack shutdown) and stops its LMTP body. */
  #handBack(d: Active): void {
    if (d.handedBack) return;
    d.handedBack = true;
    if (this.#current === d.inbound) {
      // The object stops sending its chunks on the nack; whatever is already on the wire is dropped.
      this.#current = null;
      this.#discarding = true;
    }
    // The LMTP client fails at its next read and never sends the final dot. A delivery already
    // past its final dot may still get Dovecot's 250: the journal records it, so the
    // redelivery this nack causes is answered from the journal.
    d.inbound.abort('agent stopping: message handed back');
    const h = d.inbound.header;
    this.#send({ type: FRAME.NACK, id: h.id, reason: 'shutdown', text: 'agent stopping' });
    this.#onSettled({
      id: h.id, attempt: h.attempt, recipients: h.recipients.length, bytes: h.size, ms: Date.now() - d.started,
      sender: h.sender, to: h.recipients, receivedAt: h.receivedAt,
      outcome: 'shutdown', results: null, error: null, note: {},
    });
  }

  #onChunk(chunk: Buffer): void {
    if (this.#discarding) {
      this.#grant(chunk.byteLength);
      return;
    }
    if (!this.#current) return this.#violation('chunk outside a message');
    this.#current.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  }

  /** Gives consumed bytes back as credit, in batches to keep frames few. */
  #grant(n: number): void {
    relayed(n);
    this.#pendingGrant += n;
    if (this.#pendingGrant >= Math.min(1024 * 1024, this.#cfg.creditBytes / 4)) {
      this.#send({ type: FRAME.CREDIT, bytes: this.#pendingGrant });
      this.#pendingGrant = 0;
    }
  }

  #lost(): void {
    this.#heartbeatLost = true;
    this.#log('heartbeat.lost', { session: this.#session, silentMs: Date.now() - this.#lastSeen });
    this.#ws.terminate();
  }

  #send(frame: AgentFrame): boolean {
    if (this.#ws.readyState !== WebSocket.OPEN) return false;
    this.#ws.send(encodeFrame(frame));
    return true;
  }

  #violation(why: string): void {
    this.#violated = true;
    this.#log('session.violation', { session: this.#session, why });
    this.#ws.close(1008, why);
  }

  /** Resolves true when every in-flight delivery settled within `ms`. */
  async #settleWithin(ms: number): Promise<boolean> {
    if (this.#active.size === 0 && this.#bounces.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((r) => { timer = setTimeout(() => r(false), ms); });
    const all = Promise.allSettled([...this.#active.keys(), ...this.#bounces]).then(() => true);
    const ok = await Promise.race([all, timeout]);
    clearTimeout(timer);
    // A bounce still running at the end is not handed back: its answer is lost with the
    // socket and the object sends the task again (the journal knows a DSN that went out).
    return ok && this.#active.size === 0;
  }

  /**
   * Graceful stop: takes no new message (each is nacked `shutdown` at once), lets in-flight
   * deliveries finish for up to `graceMs`, hands back the rest, gives them `handBackMs` to
   * unwind, then closes the socket. Bounded by graceMs + handBackMs + 5 s.
   */
  async close(graceMs: number, handBackMs = HAND_BACK_MS): Promise<SessionEnd> {
    this.#stopping = true;
    if (!(await this.#settleWithin(graceMs))) {
      for (const d of this.#active.values()) this.#handBack(d);
      await this.#settleWithin(handBackMs);
    }
    this.#ws.close(1000, 'agent stopping');
    const timer = setTimeout(() => this.#ws.terminate(), 5_000);
    const end = await this.closed;
    clearTimeout(timer);
    return end;
  }
}
