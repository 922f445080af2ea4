// A hand-driven SMTP client for tests: sends exactly the bytes it is given
// (bare CR in an address, LF inside a command, an empty DATA) and reads the
// server's replies, each wait bounded. Our LmtpClient refuses such input
// before sending it, so tests of what the server does with it need this.
import net from 'node:net';

export interface DialogReply {
  code: number;
  /** The reply's lines without the code and separator, joined by '\n'. */
  text: string;
}

export class SmtpDialog {
  readonly socket: net.Socket;
  #buf = Buffer.alloc(0);
  #replies: DialogReply[] = [];
  #waiters: (() => void)[] = [];
  #pending: string[] = [];
  #closed = false;
  readonly closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (c: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, c]);
      this.#parse();
      this.#wake();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.#closed = true;
      this.#wake();
    });
  }

  /** Connects; does not wait for the greeting (read it with replies(1)). */
  static open(port: number, host = '127.0.0.1', ms = 10_000): Promise<SmtpDialog> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, host);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${host}:${port} timed out after ${ms} ms`));
      }, ms);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(new SmtpDialog(socket));
      });
    });
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  #parse(): void {
    for (;;) {
      const eol = this.#buf.indexOf('\r\n');
      if (eol < 0) return;
      const line = this.#buf.subarray(0, eol).toString('utf8');
      this.#buf = this.#buf.subarray(eol + 2);
      const m = /^(\d{3})([ -])(.*)$/s.exec(line);
      if (!m) {
        // Not a reply line: reported as code 0 so a test sees it rather than hangs.
        this.#replies.push({ code: 0, text: line });
        continue;
      }
      this.#pending.push(m[3] ?? '');
      if (m[2] === ' ') {
        this.#replies.push({ code: Number(m[1]), text: this.#pending.join('\n') });
        this.#pending = [];
      }
    }
  }

  /** Waits for the next `n` replies; fails after `ms` or when the server closes first. */
  async replies(n: number, ms = 10_000): Promise<DialogReply[]> {
    const until = Date.now() + ms;
    while (this.#replies.length < n) {
      if (this.#closed) throw new Error(`connection closed after ${this.#replies.length} of ${n} replies: ${JSON.stringify(this.#replies)}`);
      const left = until - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${n} replies, have ${JSON.stringify(this.#replies)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.#replies.splice(0, n);
  }

  /** Writes bytes as they are (add the CRLF yourself), then reads `n` replies. */
  async send(bytes: string | Uint8Array, n = 1, ms = 10_000): Promise<DialogReply[]> {
    await this.write(bytes);
    return this.replies(n, ms);
  }

  /** Writes bytes and waits until the socket took them (bounded memory for big bodies). */
  write(bytes: string | Uint8Array): Promise<void> {
    const data = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
    return new Promise((resolve, reject) => {
      this.socket.write(data, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** QUIT (best effort) and close; bounded. */
  async quit(ms = 2_000): Promise<void> {
    if (!this.#closed) {
      this.socket.write('QUIT\r\n');
      await Promise.race([this.closed, new Promise((r) => setTimeout(r, ms))]);
    }
    this.socket.destroy();
  }

  destroy(): void {
    this.socket.destroy();
  }
}
