// A minimal LMTP client over a raw socket, for tests that must control the exact
// bytes on the wire (our LmtpClient is what is tested elsewhere, so it is not used here).
import net from 'node:net';

const CRLF = Buffer.from('\r\n');

export interface Reply {
  code: number;
  lines: string[];
}

/** Minimal LMTP client over a raw socket; replies are collected in order, one per request. */
export class RawLmtp {
  readonly #socket: net.Socket;
  #buffer = Buffer.alloc(0);
  #lines: string[] = [];
  readonly #replies: Reply[] = [];
  readonly #waiting: { resolve: (r: Reply) => void; reject: (e: Error) => void }[] = [];
  #closed: Error | null = null;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) => this.#fail(err));
    socket.on('close', () => this.#fail(new Error('connection closed')));
  }

  static connect(target: number | string): Promise<RawLmtp> {
    return new Promise((resolve, reject) => {
      const socket = typeof target === 'number' ? net.connect(target, '127.0.0.1') : net.connect(target);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RawLmtp(socket));
      });
    });
  }

  #onData(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    let eol: number;
    while ((eol = this.#buffer.indexOf(CRLF)) >= 0) {
      const line = this.#buffer.subarray(0, eol).toString('latin1');
      this.#buffer = this.#buffer.subarray(eol + 2);
      this.#lines.push(line);
      if (line.length === 3 || line[3] === ' ') {
        const reply = { code: Number(line.slice(0, 3)), lines: this.#lines };
        this.#lines = [];
        const waiter = this.#waiting.shift();
        if (waiter) waiter.resolve(reply);
        else this.#replies.push(reply);
      }
    }
  }

  #fail(err: Error): void {
    this.#closed ??= err;
    for (const waiter of this.#waiting.splice(0)) waiter.reject(err);
  }

  reply(): Promise<Reply> {
    const ready = this.#replies.shift();
    if (ready) return Promise.resolve(ready);
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  write(bytes: Buffer | string): void {
    this.#socket.write(bytes);
  }

  command(line: string): Promise<Reply> {
    this.write(`${line}\r\n`);
    return this.reply();
  }

  destroy(): void {
    this.#socket.destroy();
  }

  async quit(): Promise<void> {
    await this.command('QUIT').catch(() => undefined);
    this.#socket.destroy();
  }
}

/** The stored form of a message given as lines: each line followed by CRLF. */
export function stored(lines: Buffer[]): Buffer {
  return Buffer.concat(lines.flatMap((line) => [line, CRLF]));
}

/** DATA payload: dot-stuffed lines plus the terminating dot line. */
export function wire(lines: Buffer[]): Buffer {
  const stuffed = lines.map((line) => (line[0] === 0x2e ? Buffer.concat([Buffer.from('.'), line]) : line));
  return Buffer.concat([stored(stuffed), Buffer.from('.\r\n')]);
}

export interface Outcome {
  rcpt: Reply[];
  data: Reply[];
}

/** Connected, greeted and LHLO'd. */
export async function session(target: number | string): Promise<RawLmtp> {
  const client = await RawLmtp.connect(target);
  const greeting = await client.reply();
  if (greeting.code !== 220) throw new Error(`greeting: ${greeting.lines.join(' | ')}`);
  const lhlo = await client.command('LHLO client.example.test');
  if (lhlo.code !== 250) throw new Error(`LHLO: ${lhlo.lines.join(' | ')}`);
  return client;
}

/** MAIL, one RCPT per recipient, DATA with `payload` (already on the wire form) if any was accepted. */
export async function transaction(client: RawLmtp, rcpts: string[], payload: Buffer): Promise<Outcome> {
  const mail = await client.command('MAIL FROM:<sender@example.net>');
  if (mail.code !== 250) throw new Error(`MAIL: ${mail.lines.join(' | ')}`);
  const rcpt: Reply[] = [];
  for (const to of rcpts) rcpt.push(await client.command(`RCPT TO:<${to}>`));
  const accepted = rcpt.filter((r) => r.code === 250).length;
  const data: Reply[] = [];
  if (accepted > 0) {
    const go = await client.command('DATA');
    if (go.code !== 354) throw new Error(`DATA: ${go.lines.join(' | ')}`);
    client.write(payload);
    for (let i = 0; i < accepted; i++) data.push(await client.reply());
  }
  return { rcpt, data };
}

/** One whole session: connect, one transaction, QUIT. */
export async function deliver(target: number | string, rcpts: string[], payload: Buffer): Promise<Outcome> {
  const client = await session(target);
  try {
    return await transaction(client, rcpts, payload);
  } finally {
    await client.quit();
  }
}
