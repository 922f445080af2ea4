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
