// Framing of what a server sends: bytes -> lines -> replies. Limits are enforced here, where
// the data comes in: a line over 4096 bytes or a reply over 100 lines is a protocol error,
// whatever the chunking.

import { parseReply, parseReplyLine, type Reply } from './reply.ts';

const LF = 0x0a;
const CR = 0x0d;
const EMPTY = Buffer.alloc(0);

export const MAX_REPLY_LINE = 4096;
export const MAX_REPLY_LINES = 100;

export class LineReader {
  #rest: Buffer = EMPTY;
  readonly #max: number;

  constructor(maxLine: number = MAX_REPLY_LINE) {
    this.#max = maxLine;
  }

  /**
   * Complete lines in this chunk (without CRLF), and whether a line then was too long: the
   * lines before it still count (an LMTP 250 in the same chunk is not thrown away), nothing
   * after it does. A bare LF also ends a line: some servers send it, and a reply is never binary.
   */
  push(chunk: Uint8Array): { lines: string[]; tooLong: boolean } {
    const buf = this.#rest.length
      ? Buffer.concat([this.#rest, chunk])
      : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const lines: string[] = [];
    let start = 0;
    for (let lf = buf.indexOf(LF); lf !== -1; lf = buf.indexOf(LF, start)) {
      if (lf + 1 - start > this.#max) return { lines, tooLong: true };
      const end = lf > start && buf[lf - 1] === CR ? lf - 1 : lf;
      // Replies are ASCII; anything else is only ever shown, so lossy UTF-8 is fine.
      lines.push(buf.toString('utf8', start, end));
      start = lf + 1;
    }
    if (buf.length - start >= this.#max) return { lines, tooLong: true };  // cannot end within the limit any more
    // Copy the remainder so the caller's chunk is not kept alive by a small slice; a chunk of
    // whole lines (the usual case) leaves none, and costs no allocation.
    this.#rest = start === buf.length ? EMPTY : Buffer.from(buf.subarray(start));
    return { lines, tooLong: false };
  }
}

/** Complete replies from a byte stream. After an error the stream cannot be trusted: close it. */
export class ReplyReader {
  enhanced = false;  // set once the server offers ENHANCEDSTATUSCODES
  readonly #lines = new LineReader();
  #raw: string[] = [];

  /** The replies completed by this chunk, and the violation that stopped parsing, if any. */
  push(chunk: Uint8Array): { replies: Reply[]; error: string | null } {
    const replies: Reply[] = [];
    const { lines, tooLong } = this.#lines.push(chunk);
    for (const line of lines) {
      const l = parseReplyLine(line);
      if (!l) return { replies, error: `malformed reply line ${JSON.stringify(line.slice(0, 100))}` };
      this.#raw.push(line);
      if (this.#raw.length > MAX_REPLY_LINES) return { replies, error: `reply longer than ${MAX_REPLY_LINES} lines` };
      if (l.more) continue;
      const reply = parseReply(this.#raw, this.enhanced);
      this.#raw = [];
      if (!reply) return { replies, error: 'multiline reply with mixed codes' };
      replies.push(reply);
    }
    return { replies, error: tooLong ? `reply line longer than ${MAX_REPLY_LINE} bytes` : null };
  }
}
