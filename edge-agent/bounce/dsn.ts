// A delivery status notification (RFC 3464) for a message that failed for good, as bytes:
// a multipart/report with a text part for people, a message/delivery-status part for
// programs, and the original header section as text/rfc822-headers. Reason `delayed` gives
// the warning variant (Postfix delay_warning_time): Action: delayed, Will-Retry-Until, a
// subject and text that say it is not a bounce. Pure: the caller passes
// the clock; the same input gives the same bytes. The original headers are never decoded:
// they go in as the bytes they came as (they may hold 8-bit text in any charset).
import type { DsnReason, RecipientResult } from '../../protocol/wire.ts';

export interface DsnInput {
  /** The reporting host's domain: Reporting-MTA and From: MAILER-DAEMON@<it>. */
  reportingMta: string;
  /** The original envelope sender: the DSN goes to it (never '': nobody to tell). */
  to: string;
  /** When the Worker accepted the message (ms since the epoch). */
  arrivalDate: number;
  /** The queue id of the failed message (32 hex). */
  id: string;
  reason: DsnReason;
  /** The recipients that failed (for `delayed`: still pending), each with the reply that failed it (its last one). */
  results: readonly RecipientResult[];
  /** Reason `delayed`: until when delivery is retried (ms since the epoch); ignored otherwise. */
  retryUntil?: number;
  /** The original message's header section, exactly as received (possibly cut at a line end). */
  headers: Uint8Array;
  now: number;
  /**
   * Names of the home network the agent knows (the LMTP target's host or socket path, the
   * bounce relay's host): never written into a DSN, nor anything that looks like one (hideHome).
   */
  hide?: readonly string[];
}

const CRLF = '\r\n';
const DAY_MS = 24 * 60 * 60_000;
/** Lines are folded near this length (RFC 5322 2.1.1 asks for 78); none exceeds 998 octets. */
const FOLD_AT = 76;

/** RFC 5322 3.3 date-time in UTC, e.g. 'Sat, 28 Nov 2026 12:00:00 +0000'. */
export function rfc5322Date(ms: number): string {
  return new Date(ms).toUTCString().replace(/GMT$/, '+0000');
}

/** Text from the network (a reply) as printable ASCII: anything else becomes '?'. */
export function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}

/** What a DSN says in place of a host, address, port or path of the home network. */
export const HIDDEN = '[hidden]';

/**
 * What of a reply or a local error may go to the sender, who may be anyone (a forged sender
 * gets the DSN): the text with every host, address, port and path of the home network taken
 * out, each as HIDDEN. Out go the names in `hide`, URLs (lmtp://dovecot.lan:24), IPv4 and IPv6
 * addresses with their ports, host:port, names under private suffixes (.lan, .local, .internal,
 * .home.arpa, ...) and localhost, and absolute paths (/run/dovecot/lmtp). A mail address's
 * domain stays: the recipient is the sender's own word. The operator's log keeps every text whole.
 */
export function hideHome(text: string, hide: readonly string[] = []): string {
  let out = text;
  for (const name of hide) {
    if (name.length < 2) continue;
    const quoted = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    out = out.replace(new RegExp(`\\[?(?<![@\\w.-])${quoted}(?![\\w-])\\]?(?::\\d{1,5})?`, 'gi'), HIDDEN);
  }
  return out
    // URLs of any scheme (lmtp://dovecot.lan:24, lmtp+unix:/run/dovecot/lmtp), to the next space or closing mark.
    .replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s;,()<>"']*/gi, HIDDEN)
    .replace(/\blmtp\+unix:[^\s;,()<>"']*/gi, HIDDEN)
    // IPv6 with '::' or in full (eight groups), bracketed or not, with a port.
    .replace(/\[?(?<![\w:.])(?:[0-9a-f]{0,4}:){1,7}:[0-9a-f:.]*\]?(?::\d{1,5})?(?![\w:])/gi, HIDDEN)
    .replace(/\[?(?<![\w:])(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\]?(?::\d{1,5})?(?![\w:])/gi, HIDDEN)
    // IPv4, bracketed or not, with a port.
    .replace(/\[?(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}\]?(?::\d{1,5})?(?![\w.])/g, HIDDEN)
    // Names under suffixes no public host has, and localhost (not a mail address's domain).
    .replace(/(?<![@\w.-])(?:[a-z0-9-]+\.)*(?:[a-z0-9-]+\.(?:lan|local|localdomain|internal|intranet|home|corp|private|home\.arpa)|localhost)(?![\w-])(?::\d{1,5})?/gi, HIDDEN)
    // host:port.
    .replace(/(?<![@\w.:-])(?=[a-z0-9.-]*[a-z])[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)*:\d{1,5}(?![\w:.])/gi, HIDDEN)
    // Absolute paths of at least two segments (a socket, a spool file).
    .replace(/(?<![\w.~-])\/[\w.-]+(?:\/[\w.-]*)+/g, HIDDEN);
}

/**
 * Words into lines of at most FOLD_AT characters where the words allow (a longer word is cut
 * into pieces), the first line after `first` characters already used, later ones after
 * `indent`. The lines never need more than 998 octets.
 */
function wrap(text: string, first: number, indent: string): string[] {
  const lines: string[] = [];
  let line = '';
  let room = FOLD_AT - first;
  const words = text.split(' ').filter((w) => w !== '').flatMap((w) => {
    const pieces: string[] = [];
    for (let i = 0; i < w.length; i += FOLD_AT - indent.length - 1) pieces.push(w.slice(i, i + FOLD_AT - indent.length - 1));
    return pieces;
  });
  for (const w of words) {
    if (line !== '' && line.length + 1 + w.length > room) {
      lines.push(line);
      line = w;
      room = FOLD_AT - indent.length;
    } else line = line === '' ? w : `${line} ${w}`;
  }
  lines.push(line);
  return lines.map((l, i) => (i === 0 ? l : indent + l));
}

/** A header field, folded at spaces (RFC 5322 2.2.3). */
function field(name: string, value: string): string {
  return `${name}: ${wrap(value, name.length + 2, ' ').join(CRLF)}${CRLF}`;
}

/**
 * An address as a DSN address type (RFC 3464 2.1.2): 'rfc822; a@b' when ASCII, else
 * RFC 6533's 'utf-8; ' with each non-ASCII character as \x{HEX}, so the part stays 7-bit.
 */
function dsnAddress(a: string): string {
  if (/^[\x21-\x7e]*$/.test(a)) return `rfc822; ${a}`;
  return `utf-8; ${[...a].map((c) => (/[\x21-\x5b\x5d-\x7e]/.test(c) ? c : `\\x{${(c.codePointAt(0) ?? 0).toString(16).toUpperCase()}}`)).join('')}`;
}

/**
 * The RFC 3463 status of a failed recipient: its own enhanced code, else one derived from what
 * is known. A delayed recipient's is always class 4 (RFC 3464 2.3.4: a transient failure).
 */
export function dsnStatus(r: RecipientResult, reason: DsnReason): string {
  if (reason === 'delayed') {
    if (r.enhanced !== null) return r.enhanced.replace(/^\d/, '4');
    return r.code === 0 ? '4.4.2' : '4.0.0';
  }
  if (r.enhanced !== null) return r.enhanced;
  if (r.outcome === 'permfail') return '5.0.0';
  // A temporary failure that was given up on: 4.4.7 "delivery time expired".
  if (reason === 'expired') return '4.4.7';
  // Never settled (connections lost, no answer): 4.4.2 "bad connection"; else a plain 4.0.0.
  return r.code === 0 ? '4.4.2' : '4.0.0';
}

/** A duration for people: minutes under 2 h, hours under 2 days, else days. */
function duration(ms: number): string {
  const [n, unit] = ms < 2 * 60 * 60_000 ? [Math.max(1, Math.round(ms / 60_000)), 'minute']
    : ms < 2 * DAY_MS ? [Math.round(ms / (60 * 60_000)), 'hour'] : [Math.round(ms / DAY_MS), 'day'];
  return `${n} ${unit}${n === 1 ? '' : 's'}`;
}

/** Why delivery stopped (or, `delayed`, why it has not happened yet), for people. */
function why(input: DsnInput): string {
  const days = Math.max(1, Math.round((input.now - input.arrivalDate) / DAY_MS));
  const span = `${days} day${days === 1 ? '' : 's'}`;
  switch (input.reason) {
    case 'refused': return 'The mailbox server refused the message for the recipients below.';
    case 'expired': return `Delivery was given up after ${span}: the mailbox server kept answering with temporary failures.`;
    case 'attempts': return `Delivery was given up after ${span} and repeated attempts that never completed.`;
    case 'delayed': return '';
  }
}

/** The readable part's lines above the recipients. */
function intro(input: DsnInput): string[] {
  if (input.reason !== 'delayed') {
    return wrap(`I'm sorry to have to inform you that your message could not be delivered to one or more recipients. ${why(input)}`, 0, '');
  }
  const until = input.retryUntil === undefined ? 'it is given up' : rfc5322Date(input.retryUntil);
  return [
    '####################################################################',
    '# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #',
    '####################################################################',
    '',
    ...wrap(
      `Your message could not be delivered for ${duration(input.now - input.arrivalDate)} to the recipients below. ` +
      `This is not a bounce: the message is still queued and delivery will be retried until ${until}. ` +
      'If it cannot be delivered by then, you will get a separate notice.',
      0, '',
    ),
  ];
}

/** A reply as one line: code, enhanced code, text, e.g. '550 5.1.1 no such user'; nothing of the home network in it. */
function replyLine(r: RecipientResult, hide: readonly string[]): string {
  const text = printable(hideHome(r.text, hide));
  if (r.code === 0) return text;
  return [String(r.code), r.enhanced, text].filter((x) => x !== null && x !== '').join(' ');
}

/** A boundary that does not occur in the bytes it separates (headers come from anyone). */
function boundaryFor(input: DsnInput, parts: readonly Buffer[]): string {
  for (let n = 0; ; n++) {
    const b = `=_mailbridge_${input.id}_${input.now.toString(36)}${n === 0 ? '' : `_${n}`}`;
    if (!parts.some((p) => p.includes(b))) return b;
  }
}

/** The DSN, CRLF line ends, ready for DATA. */
export function buildDsn(input: DsnInput): Uint8Array {
  const { reportingMta: mta, now } = input;
  const hide = input.hide ?? [];
  const human = [
    `This is the mail system at host ${mta}.`,
    '',
    ...intro(input),
    '',
    ...input.results.flatMap((r) => wrap(`<${printable(r.recipient)}>: ${replyLine(r, hide) || 'no reply'}`, 0, '    ')),
    '',
  ].join(CRLF) + CRLF;

  let status = field('Reporting-MTA', `dns; ${mta}`) + field('X-Mailbridge-Queue-ID', input.id) + field('Arrival-Date', rfc5322Date(input.arrivalDate));
  const delayed = input.reason === 'delayed';
  for (const r of input.results) {
    status += CRLF + field('Final-Recipient', dsnAddress(r.recipient)) + field('Action', delayed ? 'delayed' : 'failed') + field('Status', dsnStatus(r, input.reason));
    // Never a Remote-MTA: it would name the home server.
    if (r.code > 0) status += field('Diagnostic-Code', `smtp; ${replyLine(r, hide)}`);
    status += field('Last-Attempt-Date', rfc5322Date(now));
    if (delayed && input.retryUntil !== undefined) status += field('Will-Retry-Until', rfc5322Date(input.retryUntil));
  }

  const headers = Buffer.from(input.headers.buffer, input.headers.byteOffset, input.headers.byteLength);
  const humanBytes = Buffer.from(human, 'ascii');
  const statusBytes = Buffer.from(status, 'ascii');
  const boundary = boundaryFor(input, [humanBytes, statusBytes, headers]);
  const eightBit = headers.some((b) => b >= 0x80);
  const head =
    field('From', `Mail Delivery System <MAILER-DAEMON@${mta}>`) +
    // The sender as given: it may be a UTF-8 address (then the relay needs SMTPUTF8 anyway).
    `To: <${input.to}>${CRLF}` +
    field('Subject', delayed ? 'Delayed Mail (still being retried)' : 'Undelivered Mail Returned to Sender') +
    field('Date', rfc5322Date(now)) +
    field('Message-ID', `<${input.id}.${now.toString(36)}.${delayed ? 'delay' : 'dsn'}@${mta}>`) +
    field('Auto-Submitted', 'auto-replied') +
    field('MIME-Version', '1.0') +
    `Content-Type: multipart/report; report-type=delivery-status;${CRLF} boundary="${boundary}"${CRLF}` +
    CRLF +
    `This is a MIME-encapsulated message.${CRLF}` +
    CRLF;
  const part = (type: string, extra = ''): string => `--${boundary}${CRLF}Content-Type: ${type}${CRLF}${extra}${CRLF}`;
  // RFC 2046 5.1.1: the CRLF before each '--boundary' belongs to the delimiter, not the part:
  // the headers part is the given bytes, not one more.
  return Buffer.concat([
    Buffer.from(head + part('text/plain; charset=us-ascii', `Content-Description: Notification${CRLF}`), 'utf8'),
    humanBytes,
    Buffer.from(CRLF + part('message/delivery-status', `Content-Description: Delivery report${CRLF}`), 'ascii'),
    statusBytes,
    Buffer.from(CRLF + part('text/rfc822-headers', `Content-Description: ${delayed ? 'Delayed' : 'Undelivered'} Message Headers${CRLF}${eightBit ? `Content-Transfer-Encoding: 8bit${CRLF}` : ''}`), 'ascii'),
    headers,
    Buffer.from(`${CRLF}--${boundary}--${CRLF}`, 'ascii'),
  ]);
}
