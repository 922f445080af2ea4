// The local SMTP ingress: stands in for Cloudflare Email Routing on one
// machine. Accepts a message over SMTP, spools it to disk (bounded memory),
// then hands it off once per recipient, as Email Routing calls email() once per
// recipient. It answers the SMTP client only after every handoff has answered.
import './smtp-server-fix.ts';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';

export interface Spooled { path: string; size: number }

export type HandoffResult =
  | { ok: true; id: string }
  | { ok: false; permanent: boolean; reason: string };

export interface IngressOptions {
  host?: string;
  port: number;
  spoolDir: string;
  maxBytes: number;
  maxRecipients?: number;
  maxClients?: number;
  /** Hands one recipient's copy on; must not throw for expected failures. */
  handoff(sender: string, recipient: string, message: Spooled): Promise<HandoffResult>;
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

export async function startIngress(opts: IngressOptions): Promise<Ingress> {
  const log = opts.log ?? (() => {});
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
      const finish = (err: Error | null, text?: string) => {
        rm(path, { force: true }).finally(() => (err ? cb(err) : cb(null, text)));
      };
      let size = 0;
      stream.on('data', (c: Buffer) => { size += c.byteLength; });
      pipeline(stream, createWriteStream(path, { mode: 0o600 }))
        .then(async () => {
          if (stream.sizeExceeded) {
            log('ingress.too-large', { size, max: opts.maxBytes });
            return finish(reply(552, `5.3.4 Message size exceeds the limit of ${opts.maxBytes} bytes`));
          }
          const results = [];
          for (const recipient of recipients) {
            let result: HandoffResult;
            try {
              result = await opts.handoff(sender, recipient, { path, size });
            } catch (err) {
              result = { ok: false, permanent: false, reason: `handoff failed: ${String(err)}` };
            }
            results.push({ recipient, result });
          }
          const s = summarize(results);
          log('ingress.done', {
            recipients: recipients.length, size, code: s.code,
            ids: results.flatMap((r) => (r.result.ok ? [r.result.id] : [])),
            refused: results.flatMap((r) => (r.result.ok ? [] : [{ recipient: r.recipient, reason: r.result.reason }])),
          });
          finish(s.code === 250 ? null : reply(s.code, s.text), s.text);
        })
        .catch((err: unknown) => {
          log('ingress.spool-failed', { error: String(err) });
          finish(reply(451, '4.3.0 Local spool error, try again later'));
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
