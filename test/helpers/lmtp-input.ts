// What a client sends a scripted LMTP/SMTP server, split into command lines, dot-terminated
// bodies and BDAT chunks (RFC 3030: the n bytes after `BDAT n` are read whatever the answer):
// shared by the scripted servers (test/edge-agent/lmtp-peer.ts, test/lmtp-proxy/planned-server.ts,
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
  // BDAT: bytes still owed to the chunk, the chunk so far, and whether it is the LAST.
  #chunk: { left: number; parts: Buffer[]; last: boolean } | null = null;
  /** Body bytes received so far (all transactions). */
  dataBytes = 0;

  /**
   * `onLine` gets each command line; it returns true when the server answered 354, so that
   * what follows (even in the same chunk, pipelined) is read as the body. `onBody` gets the
   * body, unstuffed, once its final dot arrived.
   */
  readonly onLine: (text: string) => boolean;
  readonly onBody: (body: Buffer) => void;

  /** Each BDAT chunk once all its bytes are in; unset: a BDAT line goes to onLine like any other. */
  readonly onChunk: ((data: Buffer, last: boolean) => void) | undefined;

  constructor(onLine: (text: string) => boolean, onBody: (body: Buffer) => void, onChunk?: (data: Buffer, last: boolean) => void) {
    this.onLine = onLine;
    this.onBody = onBody;
    this.onChunk = onChunk;
  }

  push(chunk: Buffer): void {
    if (this.#chunk) {
      const c = this.#chunk;
      const take = chunk.subarray(0, c.left);
      this.dataBytes += take.byteLength;
      c.parts.push(take);
      c.left -= take.byteLength;
      if (c.left > 0) return;
      this.#chunk = null;
      this.onChunk?.(Buffer.concat(c.parts), c.last);
      const rest = chunk.subarray(take.byteLength);
      if (rest.byteLength > 0) this.push(rest);
      return;
    }
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
      const bdat = this.onChunk ? /^BDAT (\d+)( LAST)?$/i.exec(text) : null;
      if (bdat) {
        this.#chunk = { left: Number(bdat[1]), parts: [], last: bdat[2] !== undefined };
        const rest = this.#line;
        this.#line = Buffer.alloc(0);
        this.push(rest);  // an empty chunk (BDAT 0 LAST) ends here too
        return;
      }
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
