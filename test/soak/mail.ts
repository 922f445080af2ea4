// Soak messages: deterministic from a seed, so a failing run can be replayed.
// Each carries an X-Soak-Id header to find it again in a Maildir.
import { createHash } from 'node:crypto';
import { splitTrace } from '../helpers/mail.ts';
import { prng } from '../helpers/prng.ts';

export interface SoakMessage {
  index: number;
  sender: string;
  recipients: string[];
  raw: Buffer;
  sha256: string;
}

export const KNOWN = ['alice', 'bob', 'carol', 'dave', 'erin'].map((u) => `${u}@example.test`);
export const UNKNOWN = ['nobody@example.test', 'ghost@example.test'];

/** Every NULL_SENDER_EVERY-th message comes from <> (a bounce arriving) and names an unknown recipient. */
export const NULL_SENDER_EVERY = 20;

/**
 * Sizes log-uniform from 1 KiB to maxBytes; 1-5 recipients, about one in eight unknown. Message
 * 0 and every NULL_SENDER_EVERY-th after it are from <> to an unknown and a known recipient
 * (never bounced: dead-letter); the message after each of those names an unknown recipient too.
 */
export function makeMessage(index: number, seed: number, maxBytes: number): SoakMessage {
  const rnd = prng(seed * 100_003 + index);
  const size = Math.round(Math.exp(Math.log(1024) + rnd() * (Math.log(maxBytes) - Math.log(1024))));
  const count = 1 + Math.floor(rnd() * 5);
  const pool = [...KNOWN, ...UNKNOWN, ...KNOWN];
  let recipients = [...new Set(Array.from({ length: count }, () => pool[Math.floor(rnd() * pool.length)] ?? 'alice@example.test'))];
  const nullSender = index % NULL_SENDER_EVERY === 0;
  const unknown = UNKNOWN[Math.floor(index / NULL_SENDER_EVERY) % UNKNOWN.length] ?? 'nobody@example.test';
  if (nullSender) recipients = [unknown, KNOWN[index % KNOWN.length] ?? 'alice@example.test'];
  else if (index % NULL_SENDER_EVERY === 1 && !recipients.some((r) => UNKNOWN.includes(r))) recipients.push(unknown);
  const head = Buffer.from(
    `From: ${nullSender ? `MAILER-DAEMON@example.net` : `soak-${index}@example.net`}\r\nTo: ${recipients.join(', ')}\r\nSubject: soak ${index}\r\n` +
    `Message-ID: <soak-${seed}-${index}@example.net>\r\nX-Soak-Id: ${seed}-${index}\r\n` +
    'Content-Type: text/plain; charset=Shift_JIS\r\n\r\n', 'latin1');
  // Body lines: ASCII, 8-bit bytes (Shift_JIS-like), and lines that start with '.'.
  const parts: Buffer[] = [head];
  let total = head.length;
  let n = 0;
  while (total < size) {
    const kind = n++ % 7;
    const len = 20 + Math.floor(rnd() * 60);
    const line = Buffer.alloc(len + 2);
    for (let i = 0; i < len; i++) line[i] = kind === 3 ? 0x81 + Math.floor(rnd() * 0x6f) : 0x20 + Math.floor(rnd() * 0x5f);
    if (kind === 5) line[0] = 0x2e;
    line[len] = 0x0d;
    line[len + 1] = 0x0a;
    parts.push(line);
    total += line.length;
  }
  const raw = Buffer.concat(parts);
  return { index, sender: nullSender ? '' : `soak-${index}@example.net`, recipients, raw, sha256: createHash('sha256').update(raw).digest('hex') };
}

/**
 * The X-Soak-Id of a stored message, and the message as we sent it: after Dovecot's own
 * fields, our trace header and Authentication-Results, and the Cloudflare block the stand-in
 * wrote (split off by the Worker's own parser, test/helpers/mail.ts splitTrace).
 */
export function identify(stored: Buffer): { soakId: string; body: Buffer } | null {
  const at = stored.indexOf('Received: from cloudflare-email-routing by ');
  if (at < 0) return null;
  const parts = splitTrace(stored.subarray(at));
  if (!parts) return null;
  const m = /X-Soak-Id: (\d+-\d+)\r\n/.exec(parts.rest.subarray(0, 1024).toString('latin1'));
  return m?.[1] ? { soakId: m[1], body: parts.rest } : null;
}
