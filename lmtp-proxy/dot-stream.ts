// DATA framing (RFC 5321 4.5.2): a streaming dot-stuffer that never holds more than one chunk.
//
// Choices, because they decide what the receiver delivers:
// - A '.' at the start of a line is doubled. A line starts at the beginning of the body and
//   after every LF, bare or not. smtp-server, Dovecot and Postfix all strip a stuffed dot after
//   any LF, and stuffing after a bare LF means no "<LF>.<CR><LF>" or "<LF>.<LF>" ever reaches
//   the wire, so a lenient receiver cannot be made to end DATA early (SMTP smuggling).
// - Bare LF and bare CR are passed through as they arrived, not rewritten to CRLF: the
//   message is relayed byte for byte. A '.' after a bare CR is not stuffed, since no receiver
//   above treats a bare CR as a line end, and stuffing it would add a byte to the message.
// - The only byte ever added to the body: if it does not end with CRLF, a CRLF is appended
//   before the final ".\r\n", because the terminator must start on a line of its own.

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const DOT_BUF = Buffer.from('.');

export class DotStuffer {
  #atLineStart = true;  // the next byte begins a line
  #prev = -1;           // last two bytes seen, to know whether the body ends with CRLF
  #last = -1;

  /** Encodes one chunk; returns the chunk itself when it holds no dot to stuff. */
  push(chunk: Uint8Array): Uint8Array {
    const n = chunk.byteLength;
    if (n === 0) return chunk;
    const buf = Buffer.from(chunk.buffer, chunk.byteOffset, n);
    const parts: Uint8Array[] = [];
    let from = 0;
    for (let i = buf.indexOf(DOT); i !== -1; i = buf.indexOf(DOT, i + 1)) {
      const lineStart = i === 0 ? this.#atLineStart : buf[i - 1] === LF;
      if (!lineStart) continue;
      parts.push(buf.subarray(from, i), DOT_BUF);
      from = i;  // the original dot goes out with the next part
    }
    this.#prev = n >= 2 ? (buf[n - 2] ?? -1) : this.#last;
    this.#last = buf[n - 1] ?? -1;
    this.#atLineStart = this.#last === LF;
    if (parts.length === 0) return chunk;
    parts.push(buf.subarray(from));
    return Buffer.concat(parts);
  }

  /** The end of DATA: ".\r\n", after a CRLF if the body did not end with one. */
  end(): Uint8Array {
    return Buffer.from(this.#prev === CR && this.#last === LF ? '.\r\n' : '\r\n.\r\n');
  }
}

/** The body as it goes on the wire after DATA, terminator included. */
export async function* dotStuffed(body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const enc = new DotStuffer();
  for await (const chunk of body) {
    const out = enc.push(chunk);
    if (out.byteLength) yield out;
  }
  yield enc.end();
}
