// A scripted agent for the benches: sends one wire frame at a time, exactly as told, and
// keeps what the object sends (frames, chunk sizes, pongs) so a bench can wait for the
// object's answer to each one. No delivery, no journal, no credit of its own.
import WebSocket from 'ws';
import { PING, PONG, encodeFrame, parseObjectFrame, type AgentFrame, type ObjectFrame } from '../../protocol/wire.ts';

export type Received = { kind: 'frame'; frame: ObjectFrame } | { kind: 'chunk'; bytes: number } | { kind: 'pong' };

export class WireAgent {
  readonly received: Received[] = [];
  /** Bytes of every chunk so far. */
  chunkBytes = 0;
  /** Bytes of credit granted so far, hello included. */
  granted = 0;
  #ws: WebSocket;
  #wake: (() => void)[] = [];

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.on('message', (data, isBinary) => {
      const buf = Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer);
      if (isBinary) {
        this.received.push({ kind: 'chunk', bytes: buf.byteLength });
        this.chunkBytes += buf.byteLength;
      }
      else if (buf.toString('utf8') === PONG) this.received.push({ kind: 'pong' });
      else {
        const frame = parseObjectFrame(buf.toString('utf8'));
        if (!frame) throw new Error(`the object sent a frame the agent cannot parse: ${buf.toString('utf8').slice(0, 200)}`);
        this.received.push({ kind: 'frame', frame });
      }
      for (const w of this.#wake.splice(0)) w();
    });
  }

  static async connect(url: string, token: string): Promise<WireAgent> {
    // As the edge-agent does: no permessage-deflate (bench/results/history.md, "the first fixes").
    const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` }, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_q, r) => reject(new Error(`agent upgrade refused: HTTP ${r.statusCode}`)));
      ws.once('error', reject);
    });
    return new WireAgent(ws);
  }

  send(frame: AgentFrame): void {
    if (frame.type === 'credit' || frame.type === 'hello') this.granted += frame.type === 'credit' ? frame.bytes : frame.credit;
    this.#ws.send(encodeFrame(frame));
  }

  ping(): void {
    this.#ws.send(PING);
  }

  /** Waits until `pred` holds for what arrived after index `from`; returns the new index. */
  async until(from: number, pred: (r: Received[]) => boolean, what: string, ms = 60_000): Promise<number> {
    const deadline = Date.now() + ms;
    while (!pred(this.received.slice(from))) {
      if (Date.now() > deadline) throw new Error(`agent: no ${what} within ${ms} ms (got ${JSON.stringify(this.received.slice(from).map((r) => r.kind === 'frame' ? r.frame.type : r.kind))})`);
      await new Promise<void>((r) => { this.#wake.push(r); setTimeout(r, 100); });
    }
    return this.received.length;
  }

  /** The last frame of this type received (about message `id`, if given), if any. */
  last<T extends ObjectFrame['type']>(type: T, id?: string): Extract<ObjectFrame, { type: T }> | undefined {
    for (let i = this.received.length - 1; i >= 0; i--) {
      const r = this.received[i];
      if (r?.kind === 'frame' && r.frame.type === type && (id === undefined || ('id' in r.frame && r.frame.id === id))) {
        return r.frame as Extract<ObjectFrame, { type: T }>;
      }
    }
    return undefined;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((r) => this.#ws.once('close', () => r()));
    this.#ws.close(1000, 'bench done');
    await closed;
  }
}
