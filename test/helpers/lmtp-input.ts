// What a client sends a scripted LMTP/SMTP server, split into command lines and
// dot-terminated bodies: shared by the scripted targets (test/edge-agent/lmtp-peer.ts,
// test/helpers/fuzz-target.ts) so each only decides what to answer.

const TERMINATOR = Buffer.from('\r\n.\r\n');

/** A DATA body as stored: dot-stuffing removed (the terminator already cut off). */
export function unstuff(body: Buffer): Buffer {
  return Buffer.from(body.toString('latin1').replace(/(^|\r\n)\./g, '$1'), 'latin1');
}

export class LmtpInput {
  #line = Buffer.alloc(0);
  // DATA: chunks so far, and the last bytes seen (starting with the CRLF before the body).
  #data: Buffer[] | null = null;
  #seen = 0;
  #tail = Buffer.from('\r\n');
  /** Body bytes received so far (all transactions). */
  dataBytes = 0;

  /**
   * `onLine` gets each command line; it returns true when the server answered 354, so that
   * what follows (even in the same chunk, pipelined) is read as the body. `onBody` gets the
   * body, unstuffed, once its final dot arrived.
   */
  readonly onLine: (text: string) => boolean;
  readonly onBody: (body: Buffer) => void;

  constructor(onLine: (text: string) => boolean, onBody: (body: Buffer) => void) {
    this.onLine = onLine;
    this.onBody = onBody;
  }

  push(chunk: Buffer): void {
    if (this.#data) {
      this.dataBytes += chunk.byteLength;
      // Look for CRLF.CRLF across the chunk boundary without copying the whole body each time.
      const combined = Buffer.concat([this.#tail, chunk]);
      const p = combined.indexOf(TERMINATOR);
      if (p < 0) {
        this.#data.push(chunk);
        this.#seen += chunk.byteLength;
        this.#tail = combined.subarray(Math.max(0, combined.byteLength - 4));
        return;
      }
      const start = this.#seen - this.#tail.byteLength + p;  // the terminator's CR in the real byte stream
      const all = Buffer.concat([...this.#data, chunk]);
      this.#data = null;
      this.onBody(unstuff(all.subarray(0, Math.max(0, start + 2))));
      const rest = all.subarray(start + 5);
      if (rest.byteLength > 0) this.push(rest);
      return;
    }
    this.#line = Buffer.concat([this.#line, chunk]);
    let eol: number;
    while (!this.#data && (eol = this.#line.indexOf('\r\n')) >= 0) {
      const text = this.#line.subarray(0, eol).toString('latin1');
      this.#line = this.#line.subarray(eol + 2);
      if (this.onLine(text)) {
        this.#data = [];
        this.#seen = 0;
        this.#tail = Buffer.from('\r\n');
        const rest = this.#line;
        this.#line = Buffer.alloc(0);
        if (rest.byteLength > 0) this.push(rest);
      }
    }
  }
}
