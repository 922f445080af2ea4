// The DSN builder: a well-formed multipart/report (parsed back with mailparser), the exact
// RFC 3464 fields, statuses derived when the reply had no enhanced code, reply texts kept
// printable and lines short, and the original header bytes carried byte for byte.
import t from 'tap';
import { simpleParser } from 'mailparser';
import { buildDsn, dsnStatus, hideHome, type DsnInput } from '../../edge-agent/bounce/dsn.ts';
import type { RecipientResult } from '../../protocol/wire.ts';

const DAY = 24 * 60 * 60_000;
const arrival = Date.UTC(2026, 10, 28, 12, 0, 0);
// 8-bit bytes (Latin-1 and Shift_JIS), a bare LF, a tab: none of it may change.
const headers = Buffer.concat([
  Buffer.from('From: Bob <bob@example.net>\r\nTo: alice@example.test\r\nSubject: caf', 'ascii'),
  Buffer.from([0xe9, 0x20, 0x82, 0xa0]), Buffer.from('\r\nX-Odd: a\n\tb\r\nMessage-ID: <orig@example.net>\r\n', 'ascii'),
]);
const refused: RecipientResult = { recipient: 'alice@example.test', code: 550, enhanced: '5.1.1', text: 'alice@example.test: user unknown', outcome: 'permfail' };
const input: DsnInput = {
  reportingMta: 'home.example.test', to: 'bob@example.net', arrivalDate: arrival, id: 'a'.repeat(32), reason: 'refused',
  results: [refused, { recipient: 'carol@example.test', code: 552, enhanced: null, text: 'over quota \u00e9\x01 now', outcome: 'permfail' }],
  headers, now: arrival + 60_000,
};

/** The bytes of a part's body: after its header block, up to the CRLF before the next delimiter. */
function partBody(raw: Buffer, boundary: string, type: string): Buffer {
  const start = raw.indexOf(`Content-Type: ${type}`);
  const body = raw.indexOf('\r\n\r\n', start) + 4;
  const end = raw.indexOf(`\r\n--${boundary}`, body);
  return raw.subarray(body, end);
}

t.test('a multipart/report with the three parts, parsed back', async (t) => {
  const raw = Buffer.from(buildDsn(input));
  const m = await simpleParser(raw);
  t.equal(m.from?.value[0]?.address, 'MAILER-DAEMON@home.example.test');
  t.equal(m.from?.value[0]?.name, 'Mail Delivery System');
  t.equal((Array.isArray(m.to) ? m.to[0] : m.to)?.value[0]?.address, 'bob@example.net');
  t.equal(m.subject, 'Undelivered Mail Returned to Sender');
  t.equal(m.date?.getTime(), arrival + 60_000);
  t.equal(m.messageId, `<${'a'.repeat(32)}.${(arrival + 60_000).toString(36)}.dsn@home.example.test>`);
  t.equal(m.headers.get('auto-submitted'), 'auto-replied');
  t.match(m.headers.get('content-type'), { value: 'multipart/report', params: { 'report-type': 'delivery-status' } });
  const text = (m.text ?? '').replace(/\s+/g, ' ');
  t.match(text, /could not be delivered to one or more recipients\. The mailbox server refused/);
  t.match(m.text, /<alice@example\.test>: 550 5\.1\.1 alice@example\.test: user unknown/);
  t.match(m.text, /<carol@example\.test>: 552 over quota \?\? now/, 'the reply text as printable ASCII');
  // mailparser shows message/delivery-status as text after the first part, the headers as an attachment.
  t.match(text, /Reporting-MTA: dns; home\.example\.test .*Final-Recipient: rfc822; carol@example\.test/);
  t.same(m.attachments.map((a) => a.contentType), ['text/rfc822-headers']);
  t.ok(m.attachments[0]?.content.equals(headers), 'mailparser finds the original header bytes too');
});

t.test('the delivery-status fields, exactly', async (t) => {
  const raw = Buffer.from(buildDsn(input));
  const boundary = /boundary="([^"]+)"/.exec(raw.toString('latin1'))?.[1] ?? '';
  const status = partBody(raw, boundary, 'message/delivery-status').toString('ascii');
  t.equal(status, [
    'Reporting-MTA: dns; home.example.test',
    `X-Mailbridge-Queue-ID: ${'a'.repeat(32)}`,
    'Arrival-Date: Sat, 28 Nov 2026 12:00:00 +0000',
    '',
    'Final-Recipient: rfc822; alice@example.test',
    'Action: failed',
    'Status: 5.1.1',
    'Diagnostic-Code: smtp; 550 5.1.1 alice@example.test: user unknown',
    'Last-Attempt-Date: Sat, 28 Nov 2026 12:01:00 +0000',
    '',
    'Final-Recipient: rfc822; carol@example.test',
    'Action: failed',
    'Status: 5.0.0',
    'Diagnostic-Code: smtp; 552 over quota ?? now',
    'Last-Attempt-Date: Sat, 28 Nov 2026 12:01:00 +0000',
    '',
  ].join('\r\n'));
});

t.test('the rfc822-headers part is the original header bytes, 8-bit and bare LF included', async (t) => {
  const raw = Buffer.from(buildDsn(input));
  const boundary = /boundary="([^"]+)"/.exec(raw.toString('latin1'))?.[1] ?? '';
  t.ok(partBody(raw, boundary, 'text/rfc822-headers').equals(headers), 'byte-identical');
  t.match(raw.toString('latin1'), /Content-Type: text\/rfc822-headers\r\nContent-Description: [^\r]*\r\nContent-Transfer-Encoding: 8bit\r\n/);
  const ascii = Buffer.from(buildDsn({ ...input, headers: Buffer.from('Subject: x\r\n') })).toString('latin1');
  t.notMatch(ascii, /Content-Transfer-Encoding/, '7-bit headers need no encoding label');
  t.ok(Buffer.from(buildDsn(input)).equals(raw), 'the same input gives the same bytes');
});

t.test('a boundary that appears in the original headers is not used', async (t) => {
  const first = /boundary="([^"]+)"/.exec(Buffer.from(buildDsn(input)).toString('latin1'))?.[1] ?? '';
  const hostile = Buffer.from(`X-Trap: --${first}--\r\n`);
  const raw = Buffer.from(buildDsn({ ...input, headers: hostile }));
  const b = /boundary="([^"]+)"/.exec(raw.toString('latin1'))?.[1] ?? '';
  t.not(b, first);
  t.ok(partBody(raw, b, 'text/rfc822-headers').equals(hostile));
  t.same((await simpleParser(raw)).attachments.map((a) => a.content.equals(hostile)), [true], 'mailparser splits the parts at the right boundary');
});

t.test('statuses derived when the reply had no enhanced code', async (t) => {
  const r = (outcome: RecipientResult['outcome'], code: number, enhanced: string | null = null): RecipientResult =>
    ({ recipient: 'a@b.test', code, enhanced, text: 'x', outcome });
  t.equal(dsnStatus(r('permfail', 550), 'refused'), '5.0.0');
  t.equal(dsnStatus(r('permfail', 550, '5.2.2'), 'refused'), '5.2.2', 'the enhanced code when there was one');
  t.equal(dsnStatus(r('tempfail', 451), 'expired'), '4.4.7', 'delivery time expired');
  t.equal(dsnStatus(r('tempfail', 452, '4.2.2'), 'expired'), '4.2.2');
  t.equal(dsnStatus(r('tempfail', 0), 'attempts'), '4.4.2', 'never settled: bad connection');
  t.equal(dsnStatus(r('tempfail', 451), 'attempts'), '4.0.0');
});

t.test('expired and attempts: the text says how long; no Diagnostic-Code without a reply', async (t) => {
  const lost: RecipientResult = { recipient: 'alice@example.test', code: 0, enhanced: null, text: 'ECONNECTION: connection lost', outcome: 'tempfail' };
  const expired = Buffer.from(buildDsn({ ...input, reason: 'expired', results: [{ ...lost, code: 451, text: 'try later' }], now: arrival + 5 * DAY })).toString('latin1');
  t.match(expired.replace(/\r\n/g, ' '), /Delivery was given up after 5 days: the mailbox server kept answering with temporary failures\./);
  t.match(expired, /Status: 4\.4\.7\r\nDiagnostic-Code: smtp; 451 try later\r\n/);
  const attempts = Buffer.from(buildDsn({ ...input, reason: 'attempts', results: [lost], now: arrival + DAY })).toString('latin1');
  t.match(attempts.replace(/\r\n/g, ' '), /given up after 1 day and repeated attempts that never completed/);
  t.match(attempts, /Status: 4\.4\.2\r\nLast-Attempt-Date: /, 'no Diagnostic-Code: there was no reply');
  t.match(attempts, /<alice@example\.test>: ECONNECTION: connection lost/);
});

t.test('a long reply is folded; no line passes 998 octets; non-ASCII recipients stay 7-bit', async (t) => {
  const long = { ...refused, recipient: 'j\u00fcrgen@example.test', text: `${'word '.repeat(300)}${'x'.repeat(1200)}` };
  const raw = Buffer.from(buildDsn({ ...input, results: [long], headers: Buffer.from('Subject: s\r\n') }));
  const lines = raw.toString('latin1').split('\r\n');
  t.ok(lines.every((l) => l.length <= 998), `longest line ${Math.max(...lines.map((l) => l.length))}`);
  t.ok(lines.every((l) => l.length <= 78), 'and in fact none passes 78');
  t.ok(raw.every((b) => b < 0x80), 'all 7-bit');
  t.match(raw.toString('latin1'), /Final-Recipient: utf-8; j\\x\{FC\}rgen@example\.test\r\n/);
  t.match(raw.toString('latin1'), /Diagnostic-Code: smtp; 550 5\.1\.1 word word/);
});

t.test('the delayed variant: a warning, not a bounce; Action: delayed, a class 4 Status, Will-Retry-Until', async (t) => {
  const until = arrival + 5 * DAY;
  const pending: RecipientResult = { recipient: 'alice@example.test', code: 452, enhanced: '4.2.2', text: 'mailbox full', outcome: 'tempfail' };
  const raw = Buffer.from(buildDsn({ ...input, reason: 'delayed', results: [pending], retryUntil: until, now: arrival + 4 * 60 * 60_000 }));
  const m = await simpleParser(raw);
  t.equal(m.subject, 'Delayed Mail (still being retried)');
  t.match(m.messageId, /\.delay@home\.example\.test>$/, 'a Message-ID of its own, apart from a later bounce\'s');
  const text = (m.text ?? '').replace(/\s+/g, ' ');
  t.match(text, /THIS IS A WARNING ONLY\. YOU DO NOT NEED TO RESEND YOUR MESSAGE\./);
  t.match(text, /could not be delivered for 4 hours to the recipients below\. This is not a bounce: the message is still queued and delivery will be retried until Thu, 03 Dec 2026 12:00:00 \+0000\./);
  t.notMatch(text, /I'm sorry to have to inform you/);
  const boundary = /boundary="([^"]+)"/.exec(raw.toString('latin1'))?.[1] ?? '';
  t.equal(partBody(raw, boundary, 'message/delivery-status').toString('ascii').split('\r\n\r\n')[1], [
    'Final-Recipient: rfc822; alice@example.test',
    'Action: delayed',
    'Status: 4.2.2',
    'Diagnostic-Code: smtp; 452 4.2.2 mailbox full',
    'Last-Attempt-Date: Sat, 28 Nov 2026 16:00:00 +0000',
    'Will-Retry-Until: Thu, 03 Dec 2026 12:00:00 +0000',
    '',
  ].join('\r\n'));
  t.ok(partBody(raw, boundary, 'text/rfc822-headers').equals(headers), 'the original header bytes');
  t.match(raw.toString('latin1'), /Content-Description: Delayed Message Headers/);
});

t.test('a delayed recipient\'s status is class 4 whatever its reply said', async (t) => {
  const r = (code: number, enhanced: string | null = null): RecipientResult => ({ recipient: 'a@b.test', code, enhanced, text: 'x', outcome: 'tempfail' });
  t.equal(dsnStatus(r(451, '4.3.0'), 'delayed'), '4.3.0');
  t.equal(dsnStatus(r(451), 'delayed'), '4.0.0');
  t.equal(dsnStatus(r(0), 'delayed'), '4.4.2', 'no reply: bad connection');
  t.equal(dsnStatus(r(451, '5.7.1'), 'delayed'), '4.7.1', 'an odd 5.x.x with a 4xx reply is still transient');
});

t.test('issue #22: a DSN names no host, address, port or path of the home network', async (t) => {
  const secrets = ['192.168.1.5', 'dovecot.lan', 'mailstore', 'fd00::5', '/run/dovecot/lmtp', ':24', ':2424', 'nas.local', '10.0.0.2'];
  const failures: RecipientResult[] = [
    { recipient: 'alice@example.test', code: 0, enhanced: null, text: 'connect ECONNREFUSED 192.168.1.5:24', outcome: 'tempfail' },
    { recipient: 'bob@example.test', code: 0, enhanced: null, text: 'lmtp://dovecot.lan:24: connection refused', outcome: 'tempfail' },
    { recipient: 'carol@example.test', code: 0, enhanced: null, text: 'getaddrinfo ENOTFOUND mailstore; then connect ECONNREFUSED [fd00::5]:24', outcome: 'tempfail' },
    { recipient: 'dave@example.test', code: 0, enhanced: null, text: 'connect ENOENT /run/dovecot/lmtp', outcome: 'tempfail' },
    { recipient: 'erin@example.test', code: 451, enhanced: '4.3.0', text: 'mailstore:2424 said: nas.local busy', outcome: 'tempfail' },
    {
      recipient: 'frank@example.test', code: 0, enhanced: null, outcome: 'tempfail',
      text: 'delivery given up: 3 attempts in a row ended without an answer from the agent; last error: connect ECONNREFUSED 10.0.0.2:24',
    },
    // A mail address is the sender's own word: its domain stays, whatever it looks like.
    { recipient: 'gina@home.lan', code: 550, enhanced: '5.1.1', text: '<gina@home.lan> User doesn\'t exist: gina@home.lan', outcome: 'permfail' },
  ];
  const raw = Buffer.from(buildDsn({ ...input, reason: 'expired', results: failures, hide: ['mailstore'] })).toString('latin1');
  for (const s of secrets) t.notOk(raw.includes(s), `no ${s}`);
  t.notMatch(raw, /Remote-MTA/i, 'no Remote-MTA');
  const m = await simpleParser(Buffer.from(raw, 'latin1'));
  t.match(m.text, /<alice@example\.test>: connect ECONNREFUSED \[hidden\]/, 'what happened stays: only the where is hidden');
  t.match(m.text, /<frank@example\.test>: delivery given up: 3 attempts .* last error: connect ECONNREFUSED \[hidden\]/s);
  t.match(raw, /Diagnostic-Code: smtp; 451 4\.3\.0 \[hidden\] said: \[hidden\] busy/);
  t.match(raw, /Final-Recipient: rfc822; gina@home\.lan/);
  t.match(raw, /Diagnostic-Code: smtp; 550 5\.1\.1 <gina@home\.lan> User doesn't exist:\s+gina@home\.lan/);
});

t.test('hideHome: what it takes out, and what it leaves', async (t) => {
  const cases: [string, string][] = [
    ['connect ECONNREFUSED ::1:24', 'connect ECONNREFUSED [hidden]'],
    ['lmtp+unix:/run/dovecot/lmtp: gone', '[hidden] gone'],
    ['localhost:24 timed out', '[hidden] timed out'],
    ['host [MAILSTORE]:24 refused', 'host [hidden] refused'],
    ['2001:db8:0:0:0:0:0:1 down', '[hidden] down'],
    // No address in these: times, enhanced codes, dates, words.
    ['451 4.3.0 Temporary internal error occurred. [2026-12-06 12:00:00]', '451 4.3.0 Temporary internal error occurred. [2026-12-06 12:00:00]'],
    ['452 4.2.2 Quota exceeded (mailbox for user is full)', '452 4.2.2 Quota exceeded (mailbox for user is full)'],
  ];
  for (const [text, want] of cases) t.equal(hideHome(text, ['mailstore']), want, text);
});
