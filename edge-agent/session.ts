// One WebSocket connection to the queue object: handshake, frames in and out,
// credit, heartbeat. Deliveries run in parallel (up to the window); each is
// answered with an ack only after its end frame and its final LMTP replies.
import WebSocket from 'ws';
import {
  FRAME, PING, PONG, PROTOCOL_VERSION, encodeFrame, parseObjectFrame,
  type AgentFrame, type MessageFrame, type RecipientResult,
} from '../protocol/wire.ts';
import type { AgentConfig } from './config.ts';
import { InboundMessage } from './inbound.ts';
import type { Logger } from './log.ts';

/** Delivers one message; resolves with one final result per recipient. */
export type Deliver = (msg: InboundMessage) => Promise<RecipientResult[]>;

export interface SessionEnd { code: number; reason: string }

export class AgentSession {
  readonly #cfg: AgentConfig;
  readonly #deliver: Deliver;
  readonly #log: Logger;
  readonly #ws: WebSocket;
  #session: string | null = null;
  #current: InboundMessage | null = null;
  /** After a nack mid-stream, chunks of that message still on the wire are dropped. */
  #discarding = false;
  #pendingGrant = 0;
  #lastPong = Date.now();
  #heartbeat: NodeJS.Timeout | null = null;
  #stopping = false;
  readonly #inFlight = new Set<Promise<void>>();
  readonly closed: Promise<SessionEnd>;
  readonly ready: Promise<string>;

  constructor(cfg: AgentConfig, deliver: Deliver, log: Logger) {
    this.#cfg = cfg;
    this.#deliver = deliver;
    this.#log = log;
    this.#ws = new WebSocket(cfg.workerUrl, {
      headers: { Authorization: `Bearer ${cfg.token}` },
      maxPayload: 2 * 1024 * 1024,
      handshakeTimeout: 30_000,
    });
    let readyOk: (s: string) => void = () => {};
    let readyFail: (e: Error) => void = () => {};
    this.ready = new Promise((res, rej) => { readyOk = res; readyFail = rej; });
    this.ready.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.#ws.on('close', (code, reason) => {
        if (this.#heartbeat) clearInterval(this.#heartbeat);
        this.#current?.fail('connection closed');
        this.#current = null;
        const end = { code, reason: reason.toString('utf8') };
        readyFail(new Error(`connection closed before welcome: ${end.code} ${end.reason}`));
        resolve(end);
      });
    });
    this.#ws.on('error', (err) => {
      this.#log('ws.error', { error: err.message });
      readyFail(err);
    });
    this.#ws.on('unexpected-response', (_req, res) => {
      const err = new Error(`upgrade refused: HTTP ${res.statusCode}`);
      this.#log('ws.refused', { status: res.statusCode });
      readyFail(err);
      this.#ws.terminate();
    });
    this.#ws.on('open', () => {
      this.#send({ type: FRAME.HELLO, v: PROTOCOL_VERSION, agent: cfg.name, window: cfg.concurrency, credit: cfg.creditBytes });
      this.#heartbeat = setInterval(() => this.#beat(), cfg.heartbeatMs);
    });
    this.#ws.on('message', (data, isBinary) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      if (isBinary) return this.#onChunk(buf);
      const text = buf.toString('utf8');
      if (text === PONG) {
        this.#lastPong = Date.now();
        return;
      }
      const frame = parseObjectFrame(text);
      if (!frame) return this.#violation('malformed or unknown frame');
      switch (frame.type) {
        case FRAME.WELCOME:
          if (this.#session !== null) return this.#violation('second welcome');
          this.#session = frame.session;
          this.#log('session.ready', { session: frame.session, window: frame.window });
          readyOk(frame.session);
          return;
        case FRAME.MESSAGE:
          return this.#onMessage(frame);
        case FRAME.END:
          if (this.#discarding) {
            this.#discarding = false;
            return;
          }
          if (!this.#current || this.#current.header.id !== frame.id) return this.#violation('end for a message not being sent');
          this.#current.end(frame.chunks);
          this.#current = null;
          return;
      }
    });
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  #onMessage(header: MessageFrame): void {
    if (this.#session === null) return this.#violation('message before welcome');
    if (this.#current) return this.#violation('message while another is being sent');
    this.#discarding = false;
    if (this.#stopping) {
      // Hand it straight back; its chunks already on the wire are dropped.
      this.#send({ type: FRAME.NACK, id: header.id, reason: 'shutdown', text: 'agent stopping' });
      this.#discarding = true;
      return;
    }
    const inbound = new InboundMessage(header, (n) => this.#grant(n));
    this.#current = inbound;
    const task = this.#run(inbound).finally(() => this.#inFlight.delete(task));
    this.#inFlight.add(task);
  }

  async #run(inbound: InboundMessage): Promise<void> {
    const { id } = inbound.header;
    const started = Date.now();
    let results: RecipientResult[] | null = null;
    let error = '';
    try {
      results = await this.#deliver(inbound);
    } catch (err) {
      // A local fault (e.g. the journal's disk): hand the message back, never ack.
      error = err instanceof Error ? err.message : String(err);
    } finally {
      inbound.abandon();
    }
    await inbound.ended;
    if (results === null) {
      this.#log('deliver.error', { id, error });
      this.#send({ type: FRAME.NACK, id, reason: 'unavailable', text: error.slice(0, 1000) });
      return;
    }
    if (inbound.failure) {
      this.#log('deliver.corrupt', { id, error: inbound.failure.message });
      this.#send({ type: FRAME.NACK, id, reason: 'corrupt', text: inbound.failure.message.slice(0, 1000) });
      return;
    }
    this.#send({ type: FRAME.ACK, id, results });
    this.#log('deliver.acked', {
      id, attempt: inbound.header.attempt, bytes: inbound.header.size, ms: Date.now() - started,
      outcomes: results.map((r) => `${r.outcome}:${r.code}`),
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
    this.#pendingGrant += n;
    if (this.#pendingGrant >= Math.min(1024 * 1024, this.#cfg.creditBytes / 4)) {
      this.#send({ type: FRAME.CREDIT, bytes: this.#pendingGrant });
      this.#pendingGrant = 0;
    }
  }

  #beat(): void {
    if (Date.now() - this.#lastPong > 3 * this.#cfg.heartbeatMs) {
      this.#log('heartbeat.lost', { session: this.#session, silentMs: Date.now() - this.#lastPong });
      this.#ws.terminate();
      return;
    }
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.send(PING);
  }

  #send(frame: AgentFrame): void {
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.send(encodeFrame(frame));
  }

  #violation(why: string): void {
    this.#log('session.violation', { session: this.#session, why });
    this.#ws.close(1008, why);
  }

  /** Waits for in-flight deliveries (up to `ms`), then closes the socket. */
  async close(ms: number): Promise<SessionEnd> {
    this.#stopping = true;
    const all = Promise.allSettled([...this.#inFlight]);
    await Promise.race([all, new Promise((r) => setTimeout(r, ms).unref())]);
    this.#ws.close(1000, 'agent stopping');
    const timer = setTimeout(() => this.#ws.terminate(), 5_000);
    const end = await this.closed;
    clearTimeout(timer);
    return end;
  }
}
