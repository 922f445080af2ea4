// Test mail: builds messages as bytes, sends them over SMTP with our own client,
// and reads back what a Maildir holds.
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cloudflareBlockLength } from '../../bridge-worker/cloudflare-block.ts';
import { LmtpClient, type RecipientReply } from '../../lmtp-proxy/client.ts';

export const TRACE = /^Received: from cloudflare-email-routing by ([A-Za-z0-9._-]+) \(mailbridge\) id ([0-9a-f]{32});\r\n\t[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000\r\n/;

/** Our Authentication-Results, right after the trace header (edge-agent/delivery/trace.ts). */
export const AUTH_RESULTS = /^Authentication-Results: ([A-Za-z0-9.-]+);\r\n\tspf=([a-z]+); dkim=([a-z]+); dmarc=([a-z]+); arc=([a-z]+)\r\n/;

/** Headers (ASCII, CRLF) followed by a body given as bytes. */
export function message(headers: Record<string, string>, body: Uint8Array): Buffer {
  const head = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return Buffer.concat([Buffer.from(head + '\r\n', 'latin1'), body]);
}

/** 8-bit Shift_JIS text, lines that start with '.', a lone '.' line: all must survive as bytes. */
/**
 * A header with an ISO-2022-JP encoded-word, a Shift_JIS line, then `random` random bytes (every
 * byte value, bare CR and LF among them): what must arrive byte-exact.
 */
export function eightBitMessage(random: number): Buffer {
  return Buffer.concat([
    Buffer.from('From: a@sender.test\r\nSubject: =?ISO-2022-JP?B?GyRCJEgkahsoQg==?=\r\n\r\n', 'latin1'),
    Buffer.from([0x82, 0xb1, 0x82, 0xf1, 0x82, 0xc9, 0x82, 0xbf, 0x82, 0xcd, 0x0d, 0x0a]), // Shift_JIS
    randomBytes(random),
  ]);
}

export function shiftJisMessage(id: string): Buffer {
  const sjis = Buffer.from([0x93, 0xfa, 0x96, 0x7b, 0x8c, 0xea, 0x82, 0xcc, 0x83, 0x65, 0x83, 0x58, 0x83, 0x67]);  // 日本語のテスト
  const body = Buffer.concat([
    sjis, Buffer.from('\r\n.leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n', 'latin1'),
    Buffer.from([0x80, 0xff, 0x00, 0x7f, 0x0d, 0x0a]),
  ]);
  return message({
    From: 'Sender <sender@example.net>', To: 'alice@example.test', Subject: '=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=',
    'Message-ID': `<${id}@example.net>`, 'MIME-Version': '1.0', 'Content-Type': 'text/plain; charset=Shift_JIS',
    'Content-Transfer-Encoding': '8bit',
  }, body);
}

/** A multipart message with a base64 attachment of `bytes` random bytes. */
export function attachmentMessage(id: string, bytes: number): Buffer {
  const b64 = randomBytes(bytes).toString('base64').replace(/.{1,76}/g, '$&\r\n');
  const body = `--b1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--b1\r\nContent-Type: application/octet-stream\r\n` +
    `Content-Transfer-Encoding: base64\r\n\r\n${b64}--b1--\r\n`;
  return message({
    From: 'sender@example.net', To: 'alice@example.test', Subject: 'big', 'Message-ID': `<${id}@example.net>`,
    'MIME-Version': '1.0', 'Content-Type': 'multipart/mixed; boundary="b1"',
  }, Buffer.from(body, 'latin1'));
}

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  // In 64 KiB pieces, as a socket would deliver it.
  for (let i = 0; i < b.byteLength; i += 65536) yield b.subarray(i, i + 65536);
}

/** One SMTP transaction; each result carries the server's single reply. */
export async function sendSmtp(port: number, sender: string, recipients: string[], raw: Uint8Array,
  opts: { declareSize?: boolean } = {}): Promise<RecipientReply[]> {
  const c = new LmtpClient({ protocol: 'smtp', host: '127.0.0.1', port }, { localName: 'test.client' });
  try {
    return await c.deliver({ sender, recipients }, once(raw), { size: opts.declareSize === false ? undefined : raw.byteLength, eightBit: true });
  } finally {
    await c.close();
  }
}

/** Files in a Maildir's new/ (empty when it does not exist yet). */
export async function maildirNew(dir: string): Promise<Buffer[]> {
  const names = await readdir(join(dir, 'new')).catch(() => [] as string[]);
  return Promise.all(names.sort().map((n) => readFile(join(dir, 'new', n))));
}

/** Polls until `read` yields at least `n` items; fails after `ms` (a bound, not a timing goal). */
export async function waitFor<T>(what: string, read: () => Promise<T[]>, n: number, ms = 30_000): Promise<T[]> {
  const until = Date.now() + ms;
  for (;;) {
    const got = await read();
    if (got.length >= n) return got;
    if (Date.now() > until) throw new Error(`timed out waiting for ${n} ${what}, have ${got.length}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until the queue holds no message in any state: everything acked. */
export async function drained(summary: () => Promise<Record<string, number>>, ms = 30_000): Promise<void> {
  const left = async (): Promise<number[]> => {
    const n = Object.values(await summary()).reduce((a, b) => a + b, 0);
    return n === 0 ? [0] : [];
  };
  await waitFor('an empty queue', left, 1, ms);
}

/**
 * Splits a stored message into our trace header (id, agent), our Authentication-Results, the
 * Cloudflare block Email Routing (or its stand-in) wrote below them, found by the Worker's own
 * parser, and `rest`: the sender's bytes, which a test compares with what it sent. `block` is
 * empty when there is none.
 */
export function splitTrace(stored: Buffer): { agent: string; id: string; auth: string; block: Buffer; rest: Buffer } | null {
  const head = stored.subarray(0, 1024).toString('latin1');
  const m = TRACE.exec(head);
  if (!m) return null;
  const a = AUTH_RESULTS.exec(head.slice(m[0].length));
  if (!a) return null;
  const ours = Buffer.byteLength(m[0] + a[0], 'latin1');
  return { agent: m[1] ?? '', id: m[2] ?? '', auth: a[0], ...splitBlock(stored.subarray(ours)) };
}

/** What our trace and Authentication-Results headers say (docs/protocol.md); `at`: the Worker's acceptance. */
export interface Stamp { agent: string; id: string; authservId: string; auth?: string; at: number }

const rfc5322 = (ms: number): string => new Date(ms).toUTCString().replace(/GMT$/, '+0000');

/**
 * Exactly what the target must store for `original`: our Received line, our
 * Authentication-Results, then the original bytes, nothing else (docs/protocol.md, "Trace
 * header", "Authentication-Results"). Written out from the documented form, not with the agent's code.
 */
export function storedBytes(s: Stamp, original: Uint8Array): Buffer {
  return Buffer.concat([
    Buffer.from(`Received: from cloudflare-email-routing by ${s.agent} (mailbridge) id ${s.id};\r\n\t${rfc5322(s.at)}\r\n` +
      `Authentication-Results: ${s.authservId};\r\n\t${s.auth ?? 'spf=none; dkim=none; dmarc=none; arc=none'}\r\n`, 'latin1'),
    original,
  ]);
}

/**
 * Whether `stored` is byte for byte what storedBytes() gives for an acceptance time within
 * [from, to] (a real Worker stamps its own clock: each whole second of the window is tried).
 */
export function isStoredExactly(stored: Buffer | undefined, s: Omit<Stamp, 'at'> & { at: number | [number, number] }, original: Uint8Array): boolean {
  if (!stored) return false;
  const [from, to] = typeof s.at === 'number' ? [s.at, s.at] : s.at;
  for (let sec = Math.floor(from / 1000); sec <= Math.floor(to / 1000); sec++) {
    if (stored.equals(storedBytes({ ...s, at: sec * 1000 }, original))) return true;
  }
  return false;
}

/** Splits bytes as Email Routing handed them over into its block (by the Worker's parser) and the sender's bytes. */
export function splitBlock(raw: Buffer): { block: Buffer; rest: Buffer } {
  const n = cloudflareBlockLength(raw, true);
  return { block: raw.subarray(0, n), rest: raw.subarray(n) };
}

/** The block the stand-in writes (local/email-routing.ts): its first line. */
export const STAND_IN_BLOCK = /^Received: from [^\r]+\r\n {8}by cloudflare-email\.com \(unknown\) id [A-Za-z0-9]{12}\r\n/;
