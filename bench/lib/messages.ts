// The message mix every path receives: the same bytes, differing only in one
// fixed-width id header, so each message is unique (the relay dedupes identical
// copies) and can be recognised when its file appears in the Maildir.
//
// Layout: "X-Bench-Id: <id>\r\n" first (within the first 4 KiB of the stored file on
// every path, after whatever trace headers the path adds), then ordinary headers and
// a multipart body whose base64 attachment pads the message to exactly `size` bytes.
// The bulk is one shared Buffer per size; a message is [head, ...slices of that Buffer].
import { randomBytes } from 'node:crypto';

export const ID_WIDTH = 40;
export const ID_HEADER = 'X-Bench-Id';
export const ID_RE = /X-Bench-Id: ([A-Za-z0-9._-]+)\r?\n/;
export const SENDER = 'bench-sender@example.net';

export interface Template {
  size: number;
  /** Everything after the id header line. */
  rest: Buffer;
}

export function idHeader(id: string): Buffer {
  if (!/^[A-Za-z0-9._-]+$/.test(id) || id.length > ID_WIDTH) throw new Error(`bad bench id ${id}`);
  return Buffer.from(`${ID_HEADER}: ${id.padEnd(ID_WIDTH, '_')}\r\n`, 'latin1');
}

const HEAD_BYTES = idHeader('x').byteLength;

/** A template of exactly `size` bytes once an id header is put in front. ASCII, CRLF only. */
export function template(size: number, label: string): Template {
  const head =
    `From: Bench Sender <${SENDER}>\r\n` +
    'To: undisclosed-recipients:;\r\n' +
    `Subject: mailbridge bench ${label}\r\n` +
    'Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n' +
    `Message-ID: <${label}.template@bench.example.net>\r\n` +
    'MIME-Version: 1.0\r\n' +
    'Content-Type: multipart/mixed; boundary="bench-boundary"\r\n' +
    '\r\n' +
    '--bench-boundary\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n' +
    'A benchmark message. The attachment below only fills it to its size.\r\n' +
    '--bench-boundary\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n';
  const tail = '--bench-boundary--\r\n';
  let fill = size - HEAD_BYTES - head.length - tail.length;
  if (fill < 8) throw new Error(`size ${size} too small for a bench message`);
  // base64 lines of 76 characters + CRLF; the last line takes the remainder (≥ 1 char + CRLF).
  const b64 = randomBytes(Math.ceil((fill * 3) / 4) + 3).toString('base64').replace(/[+/=]/g, 'A');
  const lines: string[] = [];
  let at = 0;
  while (fill > 0) {
    let n = Math.min(76, fill - 2);
    if (fill - (n + 2) > 0 && fill - (n + 2) < 3) n -= 3;  // never leave a line shorter than CRLF + 1
    lines.push(b64.slice(at, at + n) + '\r\n');
    at += n;
    fill -= n + 2;
  }
  const rest = Buffer.from(head + lines.join('') + tail, 'latin1');
  if (HEAD_BYTES + rest.byteLength !== size) throw new Error(`template is ${HEAD_BYTES + rest.byteLength} bytes, wanted ${size}`);
  return { size, rest };
}

/** The message as the pieces a socket would see (64 KiB), without copying the shared bytes. */
export function pieces(t: Template, id: string): Uint8Array[] {
  const out: Uint8Array[] = [idHeader(id)];
  for (let i = 0; i < t.rest.byteLength; i += 65536) out.push(t.rest.subarray(i, i + 65536));
  return out;
}

export function wholeMessage(t: Template, id: string): Buffer {
  return Buffer.concat([idHeader(id), t.rest]);
}

/**
 * An 8-bit message (Shift_JIS text, raw bytes 0x80-0xff, dot lines; CRLF line ends only,
 * so no path has a reason to rewrite line ends): is it stored byte for byte?
 */
export function eightBitMessage(id: string): Buffer {
  const sjis = Buffer.from([0x93, 0xfa, 0x96, 0x7b, 0x8c, 0xea, 0x82, 0xcc, 0x83, 0x65, 0x83, 0x58, 0x83, 0x67]);  // 日本語のテスト
  const high = Buffer.from(Array.from({ length: 128 }, (_, i) => 0x80 + i));
  const head = Buffer.from(
    `From: <${SENDER}>\r\nTo: <alice@example.test>\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\nSubject: =?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=\r\n` +
    `Message-ID: <${id}@bench.example.net>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=Shift_JIS\r\n` +
    'Content-Transfer-Encoding: 8bit\r\n\r\n', 'latin1');
  return Buffer.concat([
    idHeader(id), head, sjis, Buffer.from('\r\n.leading dot\r\n..two dots\r\n', 'latin1'),
    high, Buffer.from('\r\nend\r\n', 'latin1'),
  ]);
}

/** Where the sent message starts inside a stored file (after the headers the path added). */
export function sentPart(stored: Buffer): Buffer | null {
  const at = stored.indexOf(`${ID_HEADER}: `);
  if (at < 0 || (at > 0 && stored[at - 1] !== 0x0a)) return null;
  return stored.subarray(at);
}
