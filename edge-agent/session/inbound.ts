// One message arriving over the WebSocket (chunks) or fetched over HTTP (a body in
// R2, body-fetch.ts), exposed to the LMTP client as an async iterable of chunks.
// Verifies size and digest as bytes pass: if they do not match the header, the
// iterator throws before its end, so the LMTP client never sends the final dot and
// Dovecot never stores a corrupt message. The digest (SHA-256 of chunks, R2's MD5 of
// a fetched body) covers the bytes after the header's `prefix` (Cloudflare's block);
// the size covers them all.
import { createHash, type Hash } from 'node:crypto';
import type { MessageFrame } from '../../protocol/wire.ts';

export class TransferError extends Error {
  override name = 'TransferError';
}

export class InboundMessage implements AsyncIterable<Uint8Array> {
  readonly header: MessageFrame;
  readonly #grant: (bytes: number) => void;
  readonly #hash: Hash;
  #queue: Uint8Array[] = [];
  /** Bytes pushed and not yet read by the consumer (a fetch waits while this is high). */
  #queued = 0;
  #roomWait: (() => void) | null = null;
  #received = 0;
  #ended = false;
  #failed: TransferError | null = null;
  #abandoned = false;
  /** Set by abort(): the next read throws this instead of returning more bytes. */
  #abort: TransferError | null = null;
  #wake: (() => void) | null = null;
  #endSeen: () => void = () => {};
  /** Called once when no more bytes are wanted: the transfer failed or the consumer stopped reading. */
  #stop: (() => void) | null = null;
  /**
   * Resolves once the end frame arrived, the fetched body ended, or the transfer failed: only
   * then may an ack go out.
   */
  readonly ended: Promise<void>;

  /**
   * `grant` is called with bytes consumed: to give the object more credit (chunks), or only to
   * count them for the agent's memory reclaim (a fetched body, which needs no credit).
   */
  constructor(header: MessageFrame, grant: (bytes: number) => void) {
    this.header = header;
    this.#grant = grant;
    this.#hash = createHash(header.fetch ? 'md5' : 'sha256');
    this.ended = new Promise((resolve) => { this.#endSeen = resolve; });
  }

  /** A binary frame for this message. */
  push(chunk: Uint8Array): void {
    if (this.#ended) return this.fail('chunk after end frame');
    this.#received += chunk.byteLength;
    if (this.#received > this.header.size) return this.fail(`more than the announced ${this.header.size} bytes`);
    const skip = (this.header.prefix ?? 0) - (this.#received - chunk.byteLength);  // prefix bytes in this chunk
    this.#hash.update(skip > 0 ? chunk.subarray(Math.min(skip, chunk.byteLength)) : chunk);
    if (this.#abandoned) {
      this.#grant(chunk.byteLength);
      return;
    }
    this.#queue.push(chunk);
    this.#queued += chunk.byteLength;
    this.#notify();
  }

  /**
   * Resolves once fewer than `bytes` pushed bytes wait for the consumer (at once when it
   * stopped reading or the transfer ended): a fetch's memory bound, as credit is for chunks.
   */
  room(bytes: number): Promise<void> {
    if (this.#queued < bytes || this.#abandoned || this.#ended) return Promise.resolve();
    return new Promise((resolve) => { this.#roomWait = resolve; });
  }

  #roomMade(): void {
    const w = this.#roomWait;
    this.#roomWait = null;
    w?.();
  }

  /** The end frame, or the end of a fetched body: checks the whole transfer against the header. */
  end(): void {
    if (this.#ended) return;
    if (this.#received !== this.header.size) {
      return this.fail(`received ${this.#received} bytes, header announced ${this.header.size}`);
    }
    const digest = this.#hash.digest('hex');
    if (this.header.fetch) {
      if (digest !== this.header.fetch.md5) return this.fail(`MD5 mismatch: got ${digest}`);
    } else if (digest !== this.header.sha256) return this.fail(`SHA-256 mismatch: got ${digest}`);
    this.#ended = true;
    this.#endSeen();
    this.#notify();
  }

  /** The transfer cannot complete (corruption, socket gone). */
  fail(why: string): void {
    if (this.#failed || this.#ended) return;
    this.#failed = new TransferError(why);
    this.#ended = true;
    this.#endSeen();
    this.#notify();
    this.#roomMade();
    this.#stopped();
  }

  get failure(): TransferError | null {
    return this.#failed;
  }

  /** The consumer stopped reading (abandon()): no byte pushed from now on reaches it. */
  get abandoned(): boolean {
    return this.#abandoned;
  }

  /**
   * `stop` runs once, when no more bytes are wanted: the transfer failed, or the consumer
   * stopped reading. A body fetch then stops downloading (body-fetch.ts).
   */
  onStop(stop: () => void): void {
    this.#stop = stop;
    if (this.#failed || this.#abandoned) this.#stopped();
  }

  #stopped(): void {
    const s = this.#stop;
    this.#stop = null;
    s?.();
  }

  /**
   * Ends a fetched body that nobody reads any more (abandoned before its end: the journal
   * answered, every recipient was refused, the LMTP client gave up) without fetching the rest.
   * Unchecked, and harmlessly so: none of its bytes reach the consumer after abandon(), so no
   * final dot can follow them. Never for chunks, whose end frame the protocol waits for.
   */
  endUnread(): void {
    if (this.#ended || !this.#abandoned) return;
    this.#ended = true;
    this.#endSeen();
    this.#notify();
  }

  /**
   * Stops the consumer at its next read, even after a complete transfer: the LMTP client then
   * never sends the final dot. A consumer that already read everything is not affected (its
   * final dot may be out; the delivery's results still count). Used to hand a message back.
   */
  abort(why: string): void {
    if (!this.#ended) return this.fail(why);
    this.#abort ??= new TransferError(why);
    this.#notify();
  }

  /** The consumer stopped reading (e.g. every recipient refused): drain the rest, granting credit. */
  abandon(): void {
    if (this.#abandoned) return;
    this.#abandoned = true;
    let n = 0;
    for (const c of this.#queue) n += c.byteLength;
    this.#queue = [];
    this.#queued = 0;
    this.#roomMade();
    if (n > 0) this.#grant(n);
    this.#stopped();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    try {
      for (;;) {
        if (this.#abort) {
          // Counts as a failed transfer only now that it actually cut the body short.
          this.#failed ??= this.#abort;
          throw this.#abort;
        }
        const next = this.#queue.shift();
        if (next) {
          this.#queued -= next.byteLength;
          this.#roomMade();
          this.#grant(next.byteLength);
          yield next;
          continue;
        }
        if (this.#failed) throw this.#failed;
        if (this.#ended) return;
        await new Promise<void>((resolve) => { this.#wake = resolve; });
      }
    } finally {
      // Whether finished, thrown or returned early: nothing more is read from here.
      this.abandon();
    }
  }
}
