// A protocol-level agent for tests: speaks wire frames by hand so tests can
// send exactly what they want (bad frames, early acks) and see every frame.
import WebSocket from 'ws';
import { encodeFrame, parseObjectFrame, type AgentFrame, type ObjectFrame } from '../../protocol/wire.ts';

export type Seen = { kind: 'frame'; frame: ObjectFrame } | { kind: 'chunk'; data: Buffer } | { kind: 'text'; text: string };

export class RawAgent {
  readonly ws: WebSocket;
  readonly seen: Seen[] = [];
  readonly opened: Promise<void>;
  readonly closed: Promise<{ code: number; reason: string }>;
  #waiters: (() => void)[] = [];

  constructor(url: string, token: string | null, headers: Record<string, string> = {}) {
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

  close(): void {
    this.ws.close();
  }
}
