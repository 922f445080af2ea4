// The embedded delivery target: a local LMTP server that stores every message in a Maildir
// per recipient, <root>/<recipient, lowercased>/{tmp,new,cur}. No auth, no TLS.
//
// A message is streamed once into tmp/ of the first recipient whose Maildir could be made,
// fsynced, then hard-linked into new/ of every recipient (each new/ fsynced), and the tmp
// file is removed. Replies are per recipient (LMTP): one recipient's failure does not fail
// the others. The stored bytes are exactly the dot-unstuffed DATA bytes; nothing is added.

import './smtp-server-fix.ts';
import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import { SMTPServer } from 'smtp-server';
import type { SMTPServerDataResult, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import { discardTmp, drain, ensureMaildir, linkIntoNew, writeTmp } from './maildir.ts';
import type { TmpFile } from './maildir.ts';

export interface MaildirTarget {
  port: number;
  /** 'lmtp://127.0.0.1:<port>' */
  url: string;
  root: string;
  close(): Promise<void>;
}

export interface MaildirTargetOptions {
  root: string;
  /** default 127.0.0.1 */
  host?: string;
  /** default 0: any free port */
  port?: number;
  /** messages larger than this get 552 5.3.4 for every recipient (after the body is drained) */
  maxBytes?: number;
  log?: (event: Record<string, unknown>) => void;
}

// Replies. smtp-server adds the enhanced code from the basic one (451 → 4.3.0, 553 → 5.1.3;
// an oversized message gets its own "552 5.3.4" through rejectOversized). A Maildir name that
// is not allowed is "553 5.1.3 mailbox name not allowed" (RFC 5321 4.2.3, RFC 3463 X.1.3):
// smtp-server maps a hook's 550 to 5.1.1 and offers no way to send "550 5.1.3".
const REPLY_BAD_MAILBOX = 553;
const REPLY_STORAGE_FAILED = 451;
const REPLY_TOO_BIG = 552;

// How long close() lets open sessions finish before they are cut.
const CLOSE_TIMEOUT_MS = 5_000;
const MAX_NAME_BYTES = 255;

type ReplyError = Error & { responseCode: number };

function replyError(responseCode: number, message: string): ReplyError {
  return Object.assign(new Error(message), { responseCode });
}

/**
 * The directory name for a recipient: the address lowercased, or null when it is not a safe
 * single path component (empty, '.'-leading — which covers '.' and '..' —, a '/' or '\',
 * a control character or NUL, or longer than a file name may be).
 */
export function mailboxName(address: string): string | null {
  const name = address.toLowerCase();
  if (name === '' || name.startsWith('.')) return null;
  if (/[/\\\x00-\x1f\x7f]/.test(name)) return null;
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) return null;
  return name;
}

export async function startMaildirTarget(opts: MaildirTargetOptions): Promise<MaildirTarget> {
  const root = path.resolve(opts.root);
  const host = opts.host ?? '127.0.0.1';
  const log = opts.log ?? (() => undefined);
  await mkdir(root, { recursive: true, mode: 0o700 });

  const maildirOf = (name: string): string => {
    const dir = path.join(root, name);
    // mailboxName() already guarantees this; checked again because it guards the filesystem.
    if (path.dirname(dir) !== root) throw new Error(`recipient escapes the Maildir root: ${name}`);
    return dir;
  };

  async function deliver(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<SMTPServerDataResult[]> {
    const ids = { cid: session.id, tnx: session.transaction };
    const rcpts = session.envelope.rcptTo.map((r) => r.address);
    const storageFailed = (rcpt: string) =>
      replyError(REPLY_STORAGE_FAILED, `<${rcpt}> could not be stored, try again later`);

    // Make every recipient's Maildir first; a recipient whose Maildir fails gets a tempfail.
    const dirs: (string | null)[] = [];
    for (const rcpt of rcpts) {
      try {
        const name = mailboxName(rcpt);
        if (name === null) throw new Error('unsafe mailbox name'); // refused at RCPT already
        const dir = maildirOf(name);
        await ensureMaildir(dir);
        dirs.push(dir);
      } catch (err) {
        log({ event: 'maildir_failed', ...ids, rcpt, error: (err as Error).message });
        dirs.push(null);
      }
    }

    const stage = dirs.find((d): d is string => d !== null);
    let written: TmpFile | null;
    try {
      if (stage === undefined) throw new Error('no recipient Maildir could be created');
      written = await writeTmp(stage, stream, { discardIf: () => stream.sizeExceeded });
    } catch (err) {
      if (stage === undefined) await drain(stream);
      log({ event: 'stage_failed', ...ids, bytes: stream.byteLength, error: (err as Error).message });
      return rcpts.map(storageFailed);
    }
    if (written === null) {
      log({ event: 'too_big', ...ids, bytes: stream.byteLength, limit: opts.maxBytes });
      return rcpts.map(() =>
        replyError(REPLY_TOO_BIG, `Error: message exceeds fixed maximum message size ${opts.maxBytes}`),
      );
    }

    const tmp = written;
    const results: SMTPServerDataResult[] = [];
    const done = new Map<string, SMTPServerDataResult>();
    for (const [i, rcpt] of rcpts.entries()) {
      const dir = dirs[i];
      if (dir === null || dir === undefined) {
        results.push(storageFailed(rcpt));
        continue;
      }
      const again = done.get(dir);
      if (again !== undefined) {
        results.push(again);
        continue;
      }
      let result: SMTPServerDataResult;
      try {
        const stored = await linkIntoNew(tmp, dir);
        log({ event: 'stored', ...ids, rcpt, name: stored.name, bytes: stored.bytes });
        result = `<${rcpt}> ${stored.name} Saved`;
      } catch (err) {
        log({ event: 'store_failed', ...ids, rcpt, error: (err as Error).message });
        result = storageFailed(rcpt);
      }
      done.set(dir, result);
      results.push(result);
    }
    await discardTmp(tmp).catch((err: unknown) =>
      log({ event: 'tmp_cleanup_failed', ...ids, file: tmp.path, error: (err as Error).message }),
    );
    return results;
  }

  const server = new SMTPServer({
    lmtp: true,
    secure: false,
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    hideSTARTTLS: true,
    // Offer ENHANCEDSTATUSCODES: every reply then carries x.y.z (smtp-server hides it by default).
    hideENHANCEDSTATUSCODES: false,
    logger: false,
    banner: 'mailbridge Maildir target',
    closeTimeout: CLOSE_TIMEOUT_MS,
    ...(opts.maxBytes === undefined ? {} : { size: opts.maxBytes, rejectOversized: true }),

    onRcptTo(address, session, callback) {
      if (mailboxName(address.address) === null) {
        log({ event: 'rcpt_refused', cid: session.id, rcpt: address.address, code: REPLY_BAD_MAILBOX });
        callback(replyError(REPLY_BAD_MAILBOX, `<${address.address}> mailbox name not allowed`));
        return;
      }
      callback();
    },

    onData(stream, session, callback) {
      deliver(stream, session).then(
        (results) => callback(null, results),
        (err: unknown) => callback(replyError(REPLY_STORAGE_FAILED, `Error: ${(err as Error).message}`)),
      );
    },
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err: Error) => log({ event: 'server_error', error: err.message }));

  const address = server.server.address();
  if (address === null || typeof address === 'string') throw new Error('Maildir target is not on a TCP port');
  const port = address.port;
  const url = `lmtp://${host.includes(':') ? `[${host}]` : host}:${port}`;
  log({ event: 'listening', url, root });

  let closing: Promise<void> | undefined;
  return {
    port,
    url,
    root,
    close: () => (closing ??= new Promise<void>((resolve) => server.close(() => resolve()))),
  };
}
