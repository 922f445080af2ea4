// A scripted LMTP/SMTP server over a raw socket, for tests of our client (lmtp-proxy/client.ts)
// that must send exact bytes and see exactly what arrived: split replies, drops, silence.
import net from 'node:net';
import { LmtpClient, type ClientOptions, type RecipientReply } from '../../lmtp-proxy/client.ts';

export type Tap = { teardown(fn: () => unknown): void };

/** One accepted connection, read as a script: wait for a line, for n bytes, for a sequence. */
export class Peer {
  readonly socket: net.Socket;
  readonly lines: string[] = [];   // command lines read so far
  readonly chunks: Buffer[] = [];  // every 'data' event, to see what arrived in one write
  ended = false;
  #buf = Buffer.alloc(0);
  #wake: (() => void) | null = null;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    const wake = (): void => { this.#wake?.(); this.#wake = null; };
    socket.on('data', (b: Buffer) => { this.chunks.push(b); this.#buf = Buffer.concat([this.#buf, b]); wake(); });
    socket.on('close', () => { this.ended = true; wake(); });
    socket.on('error', () => undefined);
  }

  async #wait<T>(take: () => T | null): Promise<T> {
    for (;;) {
      const v = take();
      if (v !== null) return v;
      if (this.ended) throw new Error('peer: connection closed');
      await new Promise<void>((r) => (this.#wake = r));
    }
  }

  #take(n: number): Buffer {
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  line(): Promise<string> {
    return this.#wait(() => {
      const i = this.#buf.indexOf('\r\n');
      if (i < 0) return null;
      const l = this.#take(i + 2).subarray(0, i).toString('utf8');
      this.lines.push(l);
      return l;
    });
  }

  bytes(n: number): Promise<Buffer> {
    return this.#wait(() => (this.#buf.length >= n ? this.#take(n) : null));
  }

  /** Everything up to and including `seq`. */
  until(seq: string): Promise<Buffer> {
    return this.#wait(() => {
      const i = this.#buf.indexOf(seq);
      return i < 0 ? null : this.#take(i + seq.length);
    });
  }

  /** All that arrives until the client closes. */
  async rest(): Promise<Buffer> {
    await this.#wait(() => (this.ended ? true : null));
    return this.#take(this.#buf.length);
  }

  send(s: string): void {
    this.socket.write(s);
  }

  /** Each piece in its own TCP segment. */
  async sendPieces(...pieces: string[]): Promise<void> {
    for (const p of pieces) {
      this.socket.write(p);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

export const FAST: ClientOptions['timeouts'] = { connect: 1000, greeting: 1000, command: 1000, dataBlock: 1000, final: 1000 };

export async function raw(t: Tap, script: (p: Peer, n: number) => Promise<void>) {
  const peers: Peer[] = [];
  const clients: LmtpClient[] = [];
  const server = net.createServer((socket) => {
    const p = new Peer(socket);
    peers.push(p);
    script(p, peers.length).catch(() => undefined);  // a script cut short by the client is fine
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  // Scripts do not answer QUIT: drop their side first so close() does not wait for it.
  t.teardown(async () => {
    for (const p of peers) p.socket.destroy();
    await Promise.all(clients.map((c) => c.close()));
    await new Promise((r) => server.close(r));
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const client = (timeouts: ClientOptions['timeouts'] = {}, protocol: 'lmtp' | 'smtp' = 'lmtp', disable: ClientOptions['disable'] = [], more: ClientOptions = {}): LmtpClient => {
    const c = new LmtpClient({ protocol, host: '127.0.0.1', port }, { localName: 'client.test', timeouts: { ...FAST, ...timeouts }, disable, ...more });
    clients.push(c);
    return c;
  };
  return { peers, client };
}

export async function hello(p: Peer, ...caps: string[]): Promise<void> {
  p.send('220 raw.test LMTP ready\r\n');
  await p.line();
  const lines = ['raw.test', ...caps];
  p.send(lines.map((c, i) => `250${i === lines.length - 1 ? ' ' : '-'}${c}\r\n`).join(''));
}

export async function* chunks(...parts: string[]): AsyncGenerator<Uint8Array> {
  for (const s of parts) yield Buffer.from(s, 'latin1');
}

export const brief = (rs: RecipientReply[]): unknown[] => rs.map((r) => [r.recipient, r.code, r.enhanced, r.text, r.outcome]);
