// The local SMTP ingress: stands in for Cloudflare Email Routing on one
// machine. Accepts a message over SMTP, holds it in memory or, when large, in a
// spool file (bounded memory either way), then hands it off once per recipient,
// as Email Routing calls email() once per recipient. It answers the SMTP client
// only after every handoff has answered.
import './smtp-server-fix.ts';
import { randomBytes } from 'node:crypto';
import { open, rm, mkdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';

/**
 * Messages up to this size are held in memory as the Buffers smtp-server gave us; larger ones
 * go to a spool file. Spooling every message (open, write, lstat, unlink, and reading it back)
 * led the ingress's profile: ~3.9 ms of CPU per 10 KiB message. Memory for held messages stays
 * under maxClients × (this + one socket read): 20 × 256 KiB ≈ 5 MiB by default.
 */
export const MEMORY_MAX_BYTES = 256 * 1024;

/** A message in a spool file, which exists until every handoff of it has answered. */
export interface Spooled { path: string; size: number }

/** A received message: its exact bytes, never decoded. */
export type Received =
  | { kind: 'memory'; size: number; chunks: readonly Buffer[] }
  | ({ kind: 'file' } & Spooled);

export type HandoffResult =
  | { ok: true; id: string }
  | { ok: false; permanent: boolean; reason: string };

/** Hands one recipient's copy on, from memory or from the spool file; must not throw for expected failures. */
export interface Handoff {
  send(sender: string, recipient: string, message: Received): Promise<HandoffResult>;
}

export interface IngressOptions {
  host?: string;
  port: number;
  spoolDir: string;
  maxBytes: number;
  maxRecipients?: number;
  maxClients?: number;
  /** Largest message held in memory instead of spooled. Default MEMORY_MAX_BYTES. */
  memoryMaxBytes?: number;
  handoff: Handoff;
  log?: (event: string, fields?: Record<string, unknown>) => void;
}

export interface Ingress { port: number; close(): Promise<void> }

/** An smtp-server reply: an Error with responseCode is how its hooks answer non-2xx. */
function reply(code: number, text: string): Error {
  return Object.assign(new Error(text), { responseCode: code });
}

// RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its code and CRLF.
const MAX_TEXT = 500;

/** Cuts a reply text to one valid line, saying how much was left out. */
function fit(text: string, more: string): string {
  if (Buffer.byteLength(text) <= MAX_TEXT) return text;
  const room = MAX_TEXT - Buffer.byteLength(more) - 4;
  return `${Buffer.from(text).subarray(0, room).toString('utf8').replace(/\uFFFD$/, '')} ...${more}`;
}

/** The single SMTP answer for a DATA whose recipients were handed off one by one. */
export function summarize(results: { recipient: string; result: HandoffResult }[]): { code: number; text: string } {
  const s = summarizeLong(results);
  return { code: s.code, text: fit(s.text, ` (${results.length} recipients; see the log)`) };
}

function summarizeLong(results: { recipient: string; result: HandoffResult }[]): { code: number; text: string } {
  const temp = results.filter((r) => !r.result.ok && !r.result.permanent);
  const perm = results.filter((r) => !r.result.ok && r.result.permanent);
  const ok = results.filter((r) => r.result.ok);
  const reasons = (rs: typeof results) => rs.map((r) => `<${r.recipient}>: ${r.result.ok ? '' : r.result.reason}`).join('; ');
  // Any temporary failure: the sender retries the whole message; the queue's
  // dedupe drops the copies already accepted.
  if (temp.length > 0) return { code: 451, text: `4.3.0 Temporary failure, try again later (${reasons(temp)})` };
  if (ok.length === 0) {
    const first = perm[0]?.result;
    const enh = first && !first.ok && /^5\.3\.4/.test(first.reason) ? 552 : 550;
    return { code: enh, text: perm.length === 1 && first && !first.ok ? first.reason : reasons(perm) };
  }
  const ids = ok.map((r) => (r.result.ok ? r.result.id : '')).join(' ');
  const text = perm.length > 0 ? `2.0.0 Ok: queued as ${ids}; refused ${reasons(perm)}` : `2.0.0 Ok: queued as ${ids}`;
  return { code: 250, text };
}

/** Writes all of `buf` (a write may be short). */
async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  for (let off = 0; off < buf.byteLength;) off += (await fh.write(buf, off)).bytesWritten;
}

/**
 * Reads one DATA stream to its end: held in memory while it is at most `memoryMax` bytes,
 * else written to a spool file at `path`. Once over the size limit the rest is read and
 * dropped and nothing is kept: the message is refused. A spool failure is thrown only once the
 * stream has been read, so the client gets its 451 after its data; the partial file is removed.
 */
async function receive(stream: SMTPServerDataStream, path: string, memoryMax: number): Promise<Received | { kind: 'too-large'; size: number }> {
  let held: Buffer[] = [];
  let size = 0;
  let spooled = false;  // a file was (or was being) created at `path`
  let file: FileHandle | null = null;
  let error: unknown = null;
  try {
    for await (const c of stream as AsyncIterable<Buffer>) {
      size += c.byteLength;
      if (error !== null || stream.sizeExceeded) {
        held = [];
        continue;
      }
      held.push(c);
      if (!spooled && size <= memoryMax) continue;
      // Over the bound: what is held goes to the file first, then each chunk as it comes.
      try {
        spooled = true;
        file ??= await open(path, 'wx', 0o600);
        for (const b of held) await writeAll(file, b);
      } catch (err) {
        error = err;  // keep reading: the 451 comes after the client's data
      }
      held = [];
    }
  } catch (err) {
    error ??= err;  // the stream failed (the client went away)
  }
  if (file !== null) await file.close().catch((err: unknown) => { error ??= err; });
  if (error !== null || stream.sizeExceeded) {
    if (spooled) await rm(path, { force: true }).catch(() => undefined);
    if (error !== null) throw error;
    return { kind: 'too-large', size };
  }
  return spooled ? { kind: 'file', path, size } : { kind: 'memory', size, chunks: held };
}

export async function startIngress(opts: IngressOptions): Promise<Ingress> {
  const log = opts.log ?? (() => {});
  const memoryMax = Math.max(0, opts.memoryMaxBytes ?? MEMORY_MAX_BYTES);
  await mkdir(opts.spoolDir, { recursive: true, mode: 0o700 });
  const server = new SMTPServer({
    name: 'mailbridge-ingress',
    banner: 'mailbridge local ingress',
    disabledCommands: ['AUTH', 'STARTTLS'],
    authOptional: true,
    size: opts.maxBytes,
    maxClients: opts.maxClients ?? 20,
    logger: false,
    // smtp-server decodes commands as UTF-8: bytes that are not UTF-8 became U+FFFD. Such an
    // address names no mailbox in any SMTP dialect; refuse it before accepting the mail.
    onMailFrom(address, _session, cb) {
      if (address.address.includes('\uFFFD')) return cb(reply(501, '5.1.7 Sender address is not valid UTF-8'));
      cb();
    },
    onRcptTo(address, session: SMTPServerSession, cb) {
      if (address.address.includes('\uFFFD')) return cb(reply(501, '5.1.3 Recipient address is not valid UTF-8'));
      if (session.envelope.rcptTo.length >= (opts.maxRecipients ?? 100)) {
        return cb(reply(452, '4.5.3 Too many recipients'));
      }
      cb();
    },
    onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb) {
      const from = session.envelope.mailFrom;
      const sender = from === false ? '' : from.address;
      const recipients = session.envelope.rcptTo.map((r) => r.address);
      const path = join(opts.spoolDir, `${Date.now()}-${randomBytes(6).toString('hex')}.eml`);
      receive(stream, path, memoryMax).then(async (message) => {
        if (message.kind === 'too-large') {
          log('ingress.too-large', { size: message.size, max: opts.maxBytes });
          return cb(reply(552, `5.3.4 Message size exceeds the limit of ${opts.maxBytes} bytes`));
        }
        const results = [];
        for (const recipient of recipients) {
          let result: HandoffResult;
          try {
            result = await opts.handoff.send(sender, recipient, message);
          } catch (err) {
            result = { ok: false, permanent: false, reason: `handoff failed: ${String(err)}` };
          }
          results.push({ recipient, result });
        }
        if (message.kind === 'file') {
          await rm(message.path, { force: true }).catch((err: unknown) => log('ingress.unlink-failed', { path, error: String(err) }));
        }
        const s = summarize(results);
        log('ingress.done', {
          recipients: recipients.length, size: message.size, spooled: message.kind === 'file', code: s.code,
          ids: results.flatMap((r) => (r.result.ok ? [r.result.id] : [])),
          refused: results.flatMap((r) => (r.result.ok ? [] : [{ recipient: r.recipient, reason: r.result.reason }])),
        });
        cb(s.code === 250 ? null : reply(s.code, s.text), s.text);
      }, (err: unknown) => {
        // receive() removed what it had written.
        log('ingress.spool-failed', { error: String(err) });
        cb(reply(451, '4.3.0 Local spool error, try again later'));
      }).catch((err: unknown) => {
        // Not expected (handoff errors are results): still answer, or the client would hang.
        log('ingress.error', { error: String(err) });
        cb(reply(451, '4.3.0 Local error, try again later'));
      });
    },
  });
  server.on('error', (err) => log('ingress.error', { error: err.message }));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  return {
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
