// The block the local Email Routing stand-in writes above each message it hands to the
// Worker, as Cloudflare does on every delivery attempt (docs/reference §10, docs/architecture.md
// "The Cloudflare block"): a Received: by cloudflare-email.com with a fresh id, a fresh ARC set,
// and the verdicts. Fresh ids, times and signature values on every call, so local runs, tests,
// the soak and the bench see what the Worker sees in production: no two attempts alike.
// The stand-in checks nothing, so its verdicts say `none` unless a test sets them.
import { randomBytes } from 'node:crypto';

export interface Verdicts {
  dkim: string;
  spf: string;
  dmarc: string;
}

export interface BlockOptions {
  /** The client as the stand-in saw it (default: localhost). */
  clientHost?: string;
  clientIp?: string;
  /** What the stand-in says it checked; default `none` for each (it checks nothing). */
  verdicts?: Partial<Verdicts>;
  /** The fields later samples show (default true each); false writes the older, shorter block. */
  receivedSpf?: boolean;
  authenticationResults?: boolean;
  xcf?: boolean;
  /**
   * true: the block cloudflare/workerd#6740 reports, its Received and ARC set with no verdicts
   * (no ARC-Authentication-Results, and none of the fields that come after it).
   */
  noVerdicts?: boolean;
  now?: Date;
}

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function alnum(n: number): string {
  return [...randomBytes(n)].map((b) => ALNUM[b % ALNUM.length]).join('');
}

/** Base64 folded as Cloudflare folds its signatures: a tab, then at most 76 characters a line. */
function folded(b64: string, first: number): string {
  let out = b64.slice(0, first);
  for (let i = first; i < b64.length; i += 76) out += `\r\n\t${b64.slice(i, i + 76)}`;
  return out;
}

/** RFC 5322 date as Cloudflare writes it: `Sat, 01 Jun 2024 17:12:10 +0000`. */
function date(d: Date): string {
  return d.toUTCString().replace('GMT', '+0000');
}

/** A fresh block for one delivery attempt of a message from `sender` to `recipient` (bytes, CRLF). */
export function cloudflareBlock(sender: string, recipient: string, opts: BlockOptions = {}): Buffer {
  const now = opts.now ?? new Date();
  const t = Math.floor(now.getTime() / 1000);
  const host = opts.clientHost ?? 'localhost';
  const ip = opts.clientIp ?? '127.0.0.1';
  const v: Verdicts = { dkim: 'none', spf: 'none', dmarc: 'none', ...opts.verdicts };
  const domain = sender.includes('@') ? sender.slice(sender.lastIndexOf('@') + 1) : host;
  const mailfrom = sender === '' ? `postmaster@${host}` : sender;
  const spf = `${v.spf} (mx.cloudflare.net: ${v.spf === 'none' ? `no SPF record checked for domain of ${mailfrom}` : `domain of ${mailfrom} gave ${v.spf}`})`;
  const lines = [
    `Received: from ${host} (${ip})\r\n        by cloudflare-email.com (unknown) id ${alnum(12)}\r\n        for <${recipient}>; ${date(now)}`,
    `ARC-Seal: i=1; a=rsa-sha256; s=2023; d=cloudflare-email.com; cv=none;\r\n\tb=${folded(randomBytes(256).toString('base64'), 70)}`,
    'ARC-Message-Signature: i=1; a=rsa-sha256; s=2023; d=cloudflare-email.com; c=relaxed/relaxed;\r\n' +
      '\th=To:Date:Subject:From:reply-to:cc:resent-date:resent-from:resent-to\r\n' +
      '\t :resent-cc:in-reply-to:references:list-id:list-help:list-unsubscribe\r\n' +
      '\t :list-subscribe:list-post:list-owner:list-archive;\r\n' +
      `\tt=${t}; x=${t + 604_800}; bh=${randomBytes(32).toString('base64')};\r\n` +
      `\tb=${folded(randomBytes(256).toString('base64'), 70)}`,
  ];
  // Cloudflare writes these only below its ARC-Authentication-Results (cloudflare-block.ts).
  if (opts.noVerdicts !== true) {
    lines.push(`ARC-Authentication-Results: i=1; mx.cloudflare.net;\r\n\tdkim=${v.dkim};\r\n\tdmarc=${v.dmarc} header.from=${domain};\r\n\tspf=${spf} smtp.mailfrom=${mailfrom}`);
    if (opts.receivedSpf !== false) {
      lines.push(`Received-SPF: ${spf}\r\n\treceiver=mx.cloudflare.net; client-ip=${ip}; envelope-from="${mailfrom}"; helo=${host};`);
    }
    if (opts.authenticationResults !== false) {
      lines.push(`Authentication-Results: mx.cloudflare.net;\r\n\tdkim=${v.dkim};\r\n\tdmarc=${v.dmarc} header.from=${domain};\r\n\tspf=${v.spf} smtp.mailfrom=${mailfrom}`);
    }
    // The X-CF-* names public samples show vary; this one is the stand-in's own, marked as such.
    if (opts.xcf !== false) lines.push(`X-CF-Stand-In: local Email Routing stand-in; id=${alnum(12)}`);
  }
  return Buffer.from(lines.map((l) => `${l}\r\n`).join(''), 'latin1');
}
