// One message arriving over the WebSocket, exposed to the LMTP client as an
// async iterable of chunks. Verifies size and SHA-256 as bytes pass: if they do
// not match the header, the iterator throws before its end, so the LMTP client
// never sends the final dot and Dovecot never stores a corrupt message. The
// SHA-256 covers the bytes after the header's `prefix` (Cloudflare's block);
// the size covers them all.
import { createHash } from 'node:crypto';
import type { MessageFrame } from '../protocol/wire.ts';

export class TransferError extends Error {
  override name = 'TransferError';
}

export class InboundMessage implements AsyncIterable<Uint8Array> {
  readonly header: MessageFrame;
  readonly #grant: (bytes: number) => void;
  readonly #hash = createHash('sha256');
  #queue: Uint8Array[] = [];
  #received = 0;
  #ended = false;
  #failed: TransferError | null = null;
  #abandoned = false;
  /** Set by abort(): the next read throws this instead of returning more bytes. */
  #abort: TransferError | null = null;
  #wake: (() => void) | null = null;
  #endSeen: () => void = () => {};
  /** Resolves once the end frame arrived (or the transfer failed): only then may an ack go out. */
  readonly ended: Promise<void>;

  /** `grant` is called with bytes consumed, to give the object more credit. */
  constructor(header: MessageFrame, grant: (bytes: number) => void) {
    this.header = header;
    this.#grant = grant;
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
    this.#notify();
  }

  /** The end frame: checks the whole transfer against the header. */
  end(chunks: number): void {
    if (this.#ended) return;
    if (this.#received !== this.header.size) {
      return this.fail(`received ${this.#received} bytes, header announced ${this.header.size}`);
    }
    const sha = this.#hash.digest('hex');
    if (sha !== this.header.sha256) return this.fail(`SHA-256 mismatch: got ${sha}`);
    void chunks;
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
  }

  get failure(): TransferError | null {
    return this.#failed;
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
    if (n > 0) this.#grant(n);
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
