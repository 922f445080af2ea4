// A protocol-level agent for tests: speaks wire frames by hand so tests can
// send exactly what they want (bad frames, early acks) and see every frame.
// A message whose body is in R2 it fetches as the real agent does (received()).
import { createHash } from 'node:crypto';
import WebSocket from 'ws';
import { BODY_SESSION_HEADER, encodeFrame, parseObjectFrame, PROTOCOL_VERSION, type AgentFrame, type HelloFrame, type ObjectFrame } from '../../protocol/wire.ts';

export type Seen = { kind: 'frame'; frame: ObjectFrame } | { kind: 'chunk'; data: Buffer } | { kind: 'text'; text: string };

export class RawAgent {
  readonly ws: WebSocket;
  readonly seen: Seen[] = [];
  readonly opened: Promise<void>;
  readonly closed: Promise<{ code: number; reason: string }>;
  #waiters: (() => void)[] = [];
  readonly #url: string;
  readonly #token: string | null;

  constructor(url: string, token: string | null, headers: Record<string, string> = {}) {
    this.#url = url;
    this.#token = token;
    this.ws = new WebSocket(url, { headers: token === null ? headers : { ...headers, Authorization: `Bearer ${token}` } });
    this.opened = new Promise((res, rej) => {
      this.ws.once('open', () => res());
      this.ws.once('unexpected-response', (_q, r) => rej(new Error(`HTTP ${r.statusCode}`)));
      this.ws.once('error', rej);
    });
    this.opened.catch(() => {});
    this.closed = new Promise((res) => this.ws.on('close', (code, reason) => res({ code, reason: reason.toString() })));
    this.ws.on('message', (data, isBinary) => {
      const buf = Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer);
      if (isBinary) this.seen.push({ kind: 'chunk', data: buf });
      else {
        const f = parseObjectFrame(buf.toString('utf8'));
        this.seen.push(f ? { kind: 'frame', frame: f } : { kind: 'text', text: buf.toString('utf8') });
      }
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  send(frame: AgentFrame | string): void {
    this.ws.send(typeof frame === 'string' ? frame : encodeFrame(frame));
  }

  /** Once open, says hello in this protocol version and waits for the object's welcome. */
  async hello(f: Omit<HelloFrame, 'type' | 'v'>): Promise<void> {
    await this.opened;
    this.send({ type: 'hello', v: PROTOCOL_VERSION, ...f });
    await this.until((seen) => seen.some((s) => s.kind === 'frame' && s.frame.type === 'welcome'));
  }

  /** Waits until `pred` holds over what was seen, or fails after `ms`. */
  async until<T>(pred: (seen: Seen[]) => T | undefined | false, ms = 10_000): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = pred(this.seen);
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`timed out; seen: ${JSON.stringify(this.seen.map((s) => s.kind === 'chunk' ? `chunk ${s.data.length}` : s))}`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  frames(): ObjectFrame[] {
    return this.seen.flatMap((s) => (s.kind === 'frame' ? [s.frame] : []));
  }

  /** Bytes of every chunk after the message frame with this id, up to its end frame. */
  bytesOf(id: string): Buffer {
    const out: Buffer[] = [];
    let inside = false;
    for (const s of this.seen) {
      if (s.kind === 'frame' && s.frame.type === 'message') inside = s.frame.id === id;
      else if (s.kind === 'frame' && s.frame.type === 'end') inside = false;
      else if (s.kind === 'chunk' && inside) out.push(s.data);
    }
    return Buffer.concat(out);
  }

  /** The message frame of `id` (the latest, when it was leased more than once). */
  messageFrame(id: string): Extract<ObjectFrame, { type: 'message' }> | undefined {
    return this.frames().filter((f) => f.type === 'message' && f.id === id).pop() as Extract<ObjectFrame, { type: 'message' }> | undefined;
  }

  /** The session of this connection's welcome, once it came. */
  get session(): string | null {
    const w = this.frames().find((f) => f.type === 'welcome');
    return w?.type === 'welcome' ? w.session : null;
  }

  /**
   * GET /agent/body/<id> on this connection's host and shard, with its token and `session`
   * (default: its own; null: none, as an agent older than `fetchSession`), as the real agent
   * fetches a body in R2 (edge-agent/session/body-fetch.ts): the HTTP status and the bytes.
   */
  async fetchBody(id: string, session: string | null = this.session): Promise<{ status: number; bytes: Buffer }> {
    const u = new URL(this.#url);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    u.pathname = `/agent/body/${id}`;
    const headers: Record<string, string> = {
      ...(this.#token === null ? {} : { Authorization: `Bearer ${this.#token}` }),
      ...(session === null ? {} : { [BODY_SESSION_HEADER]: session }),
    };
    const res = await fetch(u, { headers });
    return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
  }

  /**
   * Message `id` whole, once its frame came: its chunks up to the end frame, or, for a body in
   * R2, the block from its frame followed by the fetched body (checked against size and MD5).
   */
  async received(id: string, ms = 10_000): Promise<Buffer> {
    const m = await this.until(() => this.messageFrame(id), ms);
    if (m.fetch === undefined) {
      await this.until((s) => s.some((x) => x.kind === 'frame' && x.frame.type === 'end' && x.frame.id === id), ms);
      return this.bytesOf(id);
    }
    const got = await this.fetchBody(id);
    if (got.status !== 200) throw new Error(`body of ${id}: HTTP ${got.status} ${got.bytes.toString('utf8')}`);
    if (createHash('md5').update(got.bytes).digest('hex') !== m.fetch.md5) throw new Error(`body of ${id}: MD5 mismatch`);
    const all = Buffer.concat([Buffer.from(m.fetch.block, 'base64'), got.bytes]);
    if (all.length !== m.size) throw new Error(`body of ${id}: ${all.length} bytes, the frame says ${m.size}`);
    return all;
  }

  /** Acks message `m` as Dovecot's 250 for every recipient. */
  ackAll(m: { id: string; recipients: string[] }): void {
    this.send({
      type: 'ack', id: m.id, results: m.recipients.map((recipient) => ({ recipient, code: 250, enhanced: '2.0.0', text: 'Saved', outcome: 'delivered' as const })),
    });
  }

  close(): void {
    this.ws.close();
  }
}
