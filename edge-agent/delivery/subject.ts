// Optional Subject logging (logSubject: true). The header block is copied from
// the first chunks as they stream past, at most HEADER_CAP bytes, and parsed
// with mailparser after the delivery; the body is never copied or looked at.

const HEADER_CAP = 64 * 1024;
const SUBJECT_CAP = 200;

export interface HeaderTap {
  /** The same bytes, unchanged; the header block is copied on the way. */
  body: AsyncIterable<Uint8Array>;
  /** The decoded Subject (at most 200 characters), or null if none could be read. */
  subject(): Promise<string | null>;
}

function headerEnd(b: Buffer): number {
  const crlf = b.indexOf('\r\n\r\n');
  if (crlf >= 0) return crlf + 4;
  const lf = b.indexOf('\n\n');
  return lf >= 0 ? lf + 2 : -1;
}

export function tapHeaders(source: AsyncIterable<Uint8Array>): HeaderTap {
  let head = Buffer.alloc(0);
  let complete = false;
  async function* body(): AsyncIterable<Uint8Array> {
    for await (const chunk of source) {
      if (!complete) {
        head = Buffer.concat([head, chunk.subarray(0, HEADER_CAP - head.byteLength)]);
        const end = headerEnd(head);
        if (end >= 0) head = head.subarray(0, end);
        complete = end >= 0 || head.byteLength >= HEADER_CAP;
      }
      yield chunk;
    }
  }
  return {
    body: body(),
    async subject() {
      if (head.byteLength === 0) return null;
      try {
        // Loaded on first use: mailparser (and its charset tables) cost nothing unless enabled.
        const { simpleParser } = await import('mailparser');
        // Headers only: a blank line ends them, so mailparser sees an empty body.
        const parsed = await simpleParser(Buffer.concat([head, Buffer.from('\r\n\r\n')]), { skipHtmlToText: true, skipTextToHtml: true });
        return parsed.subject === undefined ? null : parsed.subject.slice(0, SUBJECT_CAP);
      } catch {
        return null;
      }
    },
  };
}
