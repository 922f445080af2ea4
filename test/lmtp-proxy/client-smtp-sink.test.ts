// The client against Postfix's smtp-sink(1) as a fault-injecting peer: one smtp-sink per test
// on a free 127.0.0.1 port, LMTP (-L) and SMTP, told to reject, drop, announce 421 or stall at
// a given command. smtp-sink is a test program whose replies are fixed (Postfix 3.7):
//   soft reject (-r)  450 4.3.0 Error: command failed
//   hard reject (-f)  500 5.3.0 Error: command failed      (-r and -f imply -p: no PIPELINING)
//   421 (-Q)          421 4.0.0 Server closing connection, then it disconnects
//   end of data       LMTP: 250 2.2.0 Ok per recipient; SMTP: 250 2.0.0 Ok
// It sends its enhanced codes in the text even with -E, when it does not announce them.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { LmtpClient, type ClientOptions, type RecipientReply } from '../../lmtp-proxy/client.ts';
import { ciSkip } from '../helpers/skip.ts';

type Protocol = 'lmtp' | 'smtp';

const SINK_DIRS = ['/usr/sbin', '/usr/local/sbin', '/usr/bin', '/usr/local/bin'];
const START_TIMEOUT_MS = 5_000;

function findSink(): string | null {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), ...SINK_DIRS];
  for (const dir of dirs) {
    const p = path.join(dir, 'smtp-sink');
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

const SMTP_SINK = findSink();

/** As dovecotSkip(): a reason to skip on a developer's machine; under CI, missing is an error. */
function sinkSkip(): string | false {
  return ciSkip('smtp-sink', !SMTP_SINK && `smtp-sink not found in PATH or ${SINK_DIRS.join(', ')} (apt-get install postfix)`);
}

const skip = sinkSkip();

// Every smtp-sink still running is killed when this process exits, whatever the reason.
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, '127.0.0.1', resolve);
  });
  const a = s.address();
  await new Promise((r) => s.close(r));
  if (typeof a !== 'object' || !a) throw new Error('no port');
  return a.port;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** True once the port accepts a connection; false when `gone()` or the time is up. */
async function accepting(port: number, gone: () => boolean): Promise<boolean> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!gone() && Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => { s.destroy(); resolve(false); });
    });
    if (ok) return true;
    await sleep(20);
  }
  return false;
}

const exitedAlready = (c: ChildProcess): boolean => c.exitCode !== null || c.signalCode !== null;

/** smtp-sink [args] -d dir/m. 127.0.0.1:PORT 10, retried on another port if it cannot bind. */
async function startSink(args: readonly string[], dumpDir: string): Promise<{ child: ChildProcess; port: number }> {
  if (!SMTP_SINK) throw new Error('smtp-sink not available');
  // As root smtp-sink refuses to run without -u ("fatal: -u option is required if running as root").
  const privileges = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
  let why = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const child = spawn(SMTP_SINK, [...privileges, ...args, '-d', `${dumpDir}/m.`, `127.0.0.1:${port}`, '10'], { stdio: ['ignore', 'ignore', 'pipe'] });
    running.add(child);
    let stderr = '';
    let gone = false;
    child.stderr?.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
    child.once('error', (e) => { gone = true; stderr += e.message; running.delete(child); });
    child.once('exit', () => { gone = true; running.delete(child); });
    if (await accepting(port, () => gone)) return { child, port };
    child.kill('SIGKILL');
    why = stderr.trim() || 'not listening';
  }
  throw new Error(`smtp-sink ${args.join(' ')} did not start: ${why}`);
}

interface Dump {
  headers: string[];  // smtp-sink's own lines: X-Client-Addr ... and the three-line Received
  message: Buffer;    // all after them, as smtp-sink wrote it
}

/**
 * One -d capture file: smtp-sink's X-* lines, its Received header (three lines), then the
 * message and an empty line. Every line ends in LF, not CRLF (see the first test).
 */
function parseDump(b: Buffer): Dump {
  const headers: string[] = [];
  let at = 0;
  let received = -1;
  while (received < 0 || headers.length < received + 3) {
    const nl = b.indexOf(0x0a, at);
    if (nl < 0) throw new Error(`truncated smtp-sink dump: ${JSON.stringify(b.toString('latin1'))}`);
    const line = b.toString('latin1', at, nl);
    if (line.startsWith('Received: ')) received = headers.length;
    headers.push(line);
    at = nl + 1;
  }
  return { headers, message: b.subarray(at) };
}

async function sink(t: Test, args: readonly string[]) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'smtp-sink-'));
  await chmod(dir, 0o777);  // smtp-sink writes its dumps as nobody when started as root
  const { child, port } = await startSink(args, dir).catch(async (e: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw e;
  });
  const clients: LmtpClient[] = [];
  // One teardown, in order: QUIT what is still open, then stop smtp-sink, then remove the dumps.
  t.teardown(async () => {
    await Promise.all(clients.map((c) => c.close()));
    if (!exitedAlready(child)) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  });
  const client = (protocol: Protocol, options: ClientOptions = {}, at: number = port): LmtpClient => {
    const c = new LmtpClient({ protocol, host: '127.0.0.1', port: at }, { localName: 'client.test', ...options });
    clients.push(c);
    return c;
  };
  const dumps = async (): Promise<Dump[]> => {
    const names = (await readdir(dir)).sort();
    return Promise.all(names.map(async (n) => parseDump(await readFile(path.join(dir, n)))));
  };
  return { port, client, dumps };
}

/** A body whose `read` flag says whether the client ever asked for a byte of it. */
function tracked(...parts: (string | Uint8Array)[]): { read: boolean; body: AsyncGenerator<Uint8Array> } {
  const state = { read: false, body: gen() };
  async function* gen(): AsyncGenerator<Uint8Array> {
    state.read = true;
    for (const p of parts) yield typeof p === 'string' ? Buffer.from(p, 'latin1') : p;
  }
  return state;
}

async function* pieces(b: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.byteLength; i += size) yield b.subarray(i, i + size);
}

/** What smtp-sink's dump shows for a body of CRLF lines: every CRLF as LF. */
const asDumped = (b: Buffer): Buffer => Buffer.from(b.toString('latin1').replaceAll('\r\n', '\n'), 'latin1');

const brief = (rs: RecipientReply[]): unknown[] => rs.map((r) => [r.recipient, r.code, r.enhanced, r.text, r.outcome]);
const ENV = { sender: 's@example.net', recipients: ['a@example.org', 'b@example.org'] };
const PROTOCOLS: readonly Protocol[] = ['lmtp', 'smtp'];
const proto = (p: Protocol): string[] => (p === 'lmtp' ? ['-L'] : []);

/** Lines that start with a dot (one is a lone '.'), 8-bit bytes and a NUL, CRLF throughout. */
const BODY = Buffer.concat([
  Buffer.from('From: s@example.net\r\nTo: a@example.org\r\nSubject: smtp-sink\r\n\r\n', 'latin1'),
  Buffer.from('.starts with a dot\r\n..two dots\r\n.\r\n...\r\n', 'latin1'),
  Buffer.from([0xe9, 0xff, 0x80, 0x00, 0x93, 0xfa, 0x0d, 0x0a]),
  Buffer.from('last line\r\n', 'latin1'),
]);

const receivedLines = (proto: string): RegExp[] => [
  /^Received: from client\.test \(\[127\.0\.0\.1\]\)$/,
  new RegExp(`^\\tby smtp-sink \\(smtp-sink\\) with ${proto} id [0-9a-f]+;$`),
  /^\t\S.*\d{4} \d\d:\d\d:\d\d [+-]\d{4}/,
];

t.test('LMTP: two recipients, dots and 8-bit; 250 2.2.0 for each, the body arrives unstuffed', { skip }, async (t) => {
  const s = await sink(t, ['-L']);
  const c = s.client('lmtp');
  const res = await c.deliver(ENV, pieces(BODY, 5), { size: BODY.length, eightBit: true });
  t.same(res, [
    { recipient: 'a@example.org', code: 250, enhanced: '2.2.0', text: 'Ok', outcome: 'delivered' },
    { recipient: 'b@example.org', code: 250, enhanced: '2.2.0', text: 'Ok', outcome: 'delivered' },
  ]);
  await c.close();  // QUIT answered: smtp-sink has long closed the dump of the message
  const dumps = await s.dumps();
  t.equal(dumps.length, 1, 'one transaction captured');
  const d = dumps[0];
  // smtp-sink offers no SIZE, so none is sent; it offers 8BITMIME, so BODY=8BITMIME is.
  t.same(d?.headers.slice(0, 6), [
    'X-Client-Addr: 127.0.0.1', 'X-Client-Proto: LMTP', 'X-Helo-Args: client.test',
    'X-Mail-Args: <s@example.net> BODY=8BITMIME', 'X-Rcpt-Args: <a@example.org>', 'X-Rcpt-Args: <b@example.org>',
  ]);
  t.equal(d?.headers.length, 9);
  for (const [i, re] of receivedLines('LMTP').entries()) t.match(d?.headers[6 + i], re);
  // The dump is not byte-exact by design: smtp-sink writes each received line with LF instead
  // of CRLF (it also drops a bare CR and ends a line at a bare LF, so this body has neither)
  // and adds an empty line after the message. It does remove the dot-stuffing, so a lone '.'
  // line and the line-start dots come back as sent, and 8-bit bytes and NUL are kept: the
  // comparison below is exact modulo CRLF -> LF.
  t.same(d?.message, Buffer.concat([asDumped(BODY), Buffer.from('\n')]));
});

t.test('SMTP: one 250 2.0.0 for all; a body ending in a line-start dot without CRLF', { skip }, async (t) => {
  const s = await sink(t, []);
  const c = s.client('smtp');
  const body = Buffer.from('Subject: x\r\n\r\nline\r\n.', 'latin1');
  const res = await c.deliver(ENV, pieces(body, 3), { eightBit: false });
  t.same(brief(res), [
    ['a@example.org', 250, '2.0.0', 'Ok', 'delivered'],
    ['b@example.org', 250, '2.0.0', 'Ok', 'delivered'],
  ]);
  await c.close();
  const [d, ...more] = await s.dumps();
  t.equal(more.length, 0);
  t.same(d?.headers.slice(0, 6), [
    'X-Client-Addr: 127.0.0.1', 'X-Client-Proto: ESMTP', 'X-Helo-Args: client.test',
    'X-Mail-Args: <s@example.net>', 'X-Rcpt-Args: <a@example.org>', 'X-Rcpt-Args: <b@example.org>',
  ]);
  for (const [i, re] of receivedLines('ESMTP').entries()) t.match(d?.headers[6 + i], re);
  // The client adds the one CRLF the message lacks; the trailing '.' is stuffed and comes back.
  t.same(d?.message, Buffer.from('Subject: x\n\nline\n.\n\n', 'latin1'));
});

t.test('two messages on one connection, back to back, each captured', { skip }, async (t) => {
  const s = await sink(t, ['-L']);
  const c = s.client('lmtp');
  const one = await c.deliver({ sender: '', recipients: ['a@example.org'] }, tracked('one\r\n').body);
  const two = await c.deliver({ sender: 's@example.net', recipients: ['b@example.org'] }, tracked('two\r\n').body);
  t.same([...brief(one), ...brief(two)], [
    ['a@example.org', 250, '2.2.0', 'Ok', 'delivered'],
    ['b@example.org', 250, '2.2.0', 'Ok', 'delivered'],
  ]);
  await c.close();
  const dumps = await s.dumps();
  t.same(dumps.map((d) => [d.headers[3], d.headers[4], d.message.toString('latin1')]).sort(), [
    ['X-Mail-Args: <>', 'X-Rcpt-Args: <a@example.org>', 'one\n\n'],
    ['X-Mail-Args: <s@example.net>', 'X-Rcpt-Args: <b@example.org>', 'two\n\n'],
  ]);
});

for (const protocol of PROTOCOLS) {
  t.test(`${protocol}: -f rcpt: every recipient permfail 500 5.3.0, the body is never read`, { skip }, async (t) => {
    const s = await sink(t, [...proto(protocol), '-f', 'rcpt']);
    const b = tracked('never\r\n');
    const res = await s.client(protocol).deliver(ENV, b.body);
    t.same(brief(res), [
      ['a@example.org', 500, '5.3.0', 'Error: command failed', 'permfail'],
      ['b@example.org', 500, '5.3.0', 'Error: command failed', 'permfail'],
    ]);
    t.equal(b.read, false, 'body not read');
    t.same(await s.dumps(), [], 'no DATA, nothing captured');
  });

  t.test(`${protocol}: -r rcpt: every recipient tempfail 450 4.3.0, the body is never read`, { skip }, async (t) => {
    const s = await sink(t, [...proto(protocol), '-r', 'rcpt']);
    const b = tracked('never\r\n');
    const c = s.client(protocol);
    const res = await c.deliver(ENV, b.body);
    t.same(brief(res), [
      ['a@example.org', 450, '4.3.0', 'Error: command failed', 'tempfail'],
      ['b@example.org', 450, '4.3.0', 'Error: command failed', 'tempfail'],
    ]);
    t.equal(b.read, false, 'body not read');
    // The connection survived (RSET answered 250): the next message is refused the same way.
    const again = await c.deliver({ sender: 's@example.net', recipients: ['c@example.org'] }, tracked('x\r\n').body);
    t.same(brief(again), [['c@example.org', 450, '4.3.0', 'Error: command failed', 'tempfail']]);
  });

  // LMTP: smtp-sink answers the dot once per accepted recipient; SMTP: once for all.
  for (const [flag, code, enhanced, outcome] of [['-f', 500, '5.3.0', 'permfail'], ['-r', 450, '4.3.0', 'tempfail']] as const) {
    t.test(`${protocol}: ${flag} . (refused after end of data): every recipient ${outcome} ${code}`, { skip }, async (t) => {
      const s = await sink(t, [...proto(protocol), flag, '.']);
      const c = s.client(protocol);
      const res = await c.deliver(ENV, tracked('Subject: x\r\n\r\nbody\r\n').body);
      t.same(brief(res), [
        ['a@example.org', code, enhanced, 'Error: command failed', outcome],
        ['b@example.org', code, enhanced, 'Error: command failed', outcome],
      ]);
      // Every reply to the dot was consumed: the connection is still in step for another message.
      const again = await c.deliver({ sender: 's@example.net', recipients: ['c@example.org'] }, tracked('x\r\n').body);
      t.same(brief(again), [['c@example.org', code, enhanced, 'Error: command failed', outcome]]);
    });
  }

  t.test(`${protocol}: -q . (drop after the dot, no reply): every recipient tempfail, code 0, ECONNECTION`, { skip }, async (t) => {
    const s = await sink(t, [...proto(protocol), '-q', '.']);
    const res = await s.client(protocol).deliver(ENV, tracked('Subject: x\r\n\r\nbody\r\n').body);
    const text = 'ECONNECTION: connection closed by the server while waiting for the reply to end of data (the message may have been delivered)';
    t.same(brief(res), [
      ['a@example.org', 0, null, text, 'tempfail'],
      ['b@example.org', 0, null, text, 'tempfail'],
    ]);
    t.ok(res.every((r) => r.text.startsWith('ECONNECTION')));
    // The server did get the whole message: this tempfail is the documented duplicate window.
    const dumps = await s.dumps();
    t.same(dumps.map((d) => d.message.toString('latin1')), ['Subject: x\n\nbody\n\n']);
  });

  t.test(`${protocol}: -Q mail (421 to MAIL, then drop): every recipient tempfail 421`, { skip }, async (t) => {
    const s = await sink(t, [...proto(protocol), '-Q', 'mail']);
    const b = tracked('never\r\n');
    const res = await s.client(protocol).deliver(ENV, b.body);
    t.same(brief(res), [
      ['a@example.org', 421, '4.0.0', 'Server closing connection', 'tempfail'],
      ['b@example.org', 421, '4.0.0', 'Server closing connection', 'tempfail'],
    ]);
    t.equal(b.read, false, 'body not read');
  });
}

// -A: after its 354, smtp-sink waits, sends "550 This violates SMTP" (no enhanced code), stops
// reading and disconnects.
for (const protocol of PROTOCOLS) {
  t.test(`${protocol}: -A 0 (550 and drop in the middle of a 16 MiB body): tempfail code 0, the final dot never sent`, { skip }, async (t) => {
    const s = await sink(t, [...proto(protocol), '-A', '0']);
    const chunk = Buffer.alloc(64 * 1024, 'x');
    chunk.write('\r\n', chunk.length - 2, 'latin1');
    const total = 256;
    let sent = 0;
    async function* big(): AsyncGenerator<Uint8Array> {
      for (; sent < total; sent++) yield chunk;
    }
    const res = await s.client(protocol).deliver(ENV, big());
    // Which comes first is a race: the 550, read while no reply is expected (EPROTOCOL), or
    // the error from the socket smtp-sink closed with our bytes unread (EPIPE, or ECONNRESET
    // on a write or a read). All of them are tempfail, code 0.
    t.same(res.map((r) => [r.recipient, r.code, r.enhanced, r.outcome]), [
      ['a@example.org', 0, null, 'tempfail'],
      ['b@example.org', 0, null, 'tempfail'],
    ]);
    for (const r of res) t.match(r.text, /^(?:EPROTOCOL: unexpected reply: 550 This violates SMTP|ECONNECTION: (?:read|write) (?:EPIPE|ECONNRESET))$/);
    t.equal(res[0]?.text, res[1]?.text);
    t.ok(sent < total, `the body was abandoned after ${sent} of ${total} chunks, so no final dot`);
  });
}

t.test('LMTP -A 1 (550 and drop 1 s after 354, the small body already sent): the 550 is the first recipient\'s reply', { skip }, async (t) => {
  // The whole body and the dot are written long before the 550, so by RFC 2033 the first reply
  // after the dot belongs to the first recipient: permfail for it; the second one's is never
  // sent, so tempfail. (smtp-sink meant the 550 for the transaction; no client can tell.)
  const s = await sink(t, ['-L', '-A', '1']);
  const res = await s.client('lmtp').deliver(ENV, tracked('Subject: x\r\n\r\nbody\r\n').body);
  t.same(res.map((r) => [r.recipient, r.code, r.enhanced, r.outcome]), [
    ['a@example.org', 550, null, 'permfail'],
    ['b@example.org', 0, null, 'tempfail'],
  ]);
  t.equal(res[0]?.text, 'This violates SMTP');
  // smtp-sink closes without reading what we sent after its 354, so the close is a FIN or,
  // when our body was still unread in its socket, a RST: the two texts the client can give.
  const lost = 'while waiting for the reply to end of data (the message may have been delivered)';
  t.ok([`ECONNECTION: connection closed by the server ${lost}`, `ECONNECTION: read ECONNRESET ${lost}`].includes(res[1]?.text ?? ''), res[1]?.text ?? 'no result');
});

t.test('-Q connect: a 421 greeting is tempfail 421 (enhanced code not parsed before LHLO)', { skip }, async (t) => {
  const s = await sink(t, ['-L', '-Q', 'connect']);
  const b = tracked('never\r\n');
  const res = await s.client('lmtp').deliver(ENV, b.body);
  // ENHANCEDSTATUSCODES is not yet offered at the greeting, so "4.0.0" stays in the text.
  t.same(brief(res), [
    ['a@example.org', 421, null, '4.0.0 Server closing connection', 'tempfail'],
    ['b@example.org', 421, null, '4.0.0 Server closing connection', 'tempfail'],
  ]);
  t.equal(b.read, false);
});

t.test('-q connect: dropped before the greeting is tempfail, code 0, ECONNECTION', { skip }, async (t) => {
  const s = await sink(t, ['-L', '-q', 'connect']);
  const b = tracked('never\r\n');
  const res = await s.client('lmtp').deliver(ENV, b.body);
  const text = 'ECONNECTION: connection closed by the server while waiting for the reply to the greeting';
  t.same(brief(res), [
    ['a@example.org', 0, null, text, 'tempfail'],
    ['b@example.org', 0, null, text, 'tempfail'],
  ]);
  t.equal(b.read, false);
});

t.test('-f connect: a 500 greeting is tempfail 500, not permfail, and the client goes no further', { skip }, async (t) => {
  // smtp-sink would carry on after its 500 greeting; the client must not.
  const s = await sink(t, ['-L', '-f', 'connect']);
  const b = tracked('never\r\n');
  const res = await s.client('lmtp').deliver(ENV, b.body);
  t.same(brief(res), [
    ['a@example.org', 500, null, '5.3.0 Error: command failed', 'tempfail'],
    ['b@example.org', 500, null, '5.3.0 Error: command failed', 'tempfail'],
  ]);
  t.equal(b.read, false);
  t.same(await s.dumps(), []);
});

t.test('LMTP -f lhlo: LHLO refused with 500 is tempfail 500 (no HELO fallback in LMTP)', { skip }, async (t) => {
  const s = await sink(t, ['-L', '-f', 'lhlo']);
  const b = tracked('never\r\n');
  const res = await s.client('lmtp').deliver(ENV, b.body);
  t.same(brief(res), [
    ['a@example.org', 500, null, '5.3.0 Error: command failed', 'tempfail'],
    ['b@example.org', 500, null, '5.3.0 Error: command failed', 'tempfail'],
  ]);
  t.equal(b.read, false);
  t.same(await s.dumps(), []);
});

t.test('SMTP -f ehlo: the client falls back to HELO and delivers without extensions', { skip }, async (t) => {
  const s = await sink(t, ['-f', 'ehlo']);
  const c = s.client('smtp');
  const res = await c.deliver(ENV, pieces(BODY, 64), { eightBit: true, size: BODY.length });
  // After HELO no ENHANCEDSTATUSCODES: the "2.0.0" stays in the text.
  t.same(brief(res), [
    ['a@example.org', 250, null, '2.0.0 Ok', 'delivered'],
    ['b@example.org', 250, null, '2.0.0 Ok', 'delivered'],
  ]);
  await c.close();
  const [d] = await s.dumps();
  t.same(d?.headers.slice(0, 4), ['X-Client-Addr: 127.0.0.1', 'X-Client-Proto: SMTP', 'X-Helo-Args: client.test', 'X-Mail-Args: <s@example.net>'], 'HELO, and no BODY=8BITMIME without the extension');
  t.same(d?.message, Buffer.concat([asDumped(BODY), Buffer.from('\n')]));
});

t.test('-8: BODY=8BITMIME is not sent when 8BITMIME is not offered', { skip }, async (t) => {
  const s = await sink(t, ['-L', '-8']);
  const c = s.client('lmtp');
  const res = await c.deliver({ sender: 's@example.net', recipients: ['a@example.org'] }, tracked('\xe9\r\n').body, { eightBit: true });
  t.same(brief(res), [['a@example.org', 250, '2.2.0', 'Ok', 'delivered']]);
  await c.close();
  const [d] = await s.dumps();
  t.equal(d?.headers[3], 'X-Mail-Args: <s@example.net>');
  t.same(d?.message, Buffer.from('\xe9\n\n', 'latin1'));
});

// -w delays only the reply to DATA, but with PIPELINING smtp-sink also holds back its replies
// to MAIL and RCPT that came in the same packet until it answers DATA (RFC 2920 lets a server
// batch its replies): the client then waits in vain for the reply to MAIL FROM, and says so.
for (const protocol of PROTOCOLS) {
  for (const [flags, what] of [[[], 'MAIL FROM'], [['-p'], 'DATA']] as const) {
    const name = `${protocol} ${flags.join(' ') || 'PIPELINING'}: -w 2 (DATA answered after 2 s), command timeout 300 ms: tempfail ETIMEDOUT waiting for ${what}, fast`;
    t.test(name, { skip }, async (t) => {
      const s = await sink(t, [...proto(protocol), ...flags, '-w', '2']);
      const b = tracked('never\r\n');
      const started = performance.now();
      const res = await s.client(protocol, { timeouts: { command: 300 } }).deliver(ENV, b.body);
      const elapsed = performance.now() - started;
      const text = `ETIMEDOUT: no reply to ${what} within 300 ms`;
      t.same(brief(res), [
        ['a@example.org', 0, null, text, 'tempfail'],
        ['b@example.org', 0, null, text, 'tempfail'],
      ]);
      t.ok(elapsed >= 290 && elapsed < 1500, `returned after ${Math.round(elapsed)} ms, well before the 2 s delay`);
      t.equal(b.read, false, 'no 354, so no body');
    });
  }
}

/** A TCP relay in front of smtp-sink that keeps every chunk the client sent, as it arrived. */
async function recorder(t: Test, port: number): Promise<{ port: number; chunks: string[] }> {
  const chunks: string[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((down) => {
    const up = net.connect(port, '127.0.0.1');
    sockets.push(down, up);
    down.setNoDelay(true);
    up.setNoDelay(true);
    down.on('data', (b: Buffer) => { chunks.push(b.toString('latin1')); up.write(b); });
    up.on('data', (b: Buffer) => down.write(b));
    down.on('end', () => up.end());
    up.on('end', () => down.end());
    down.on('error', () => up.destroy());
    up.on('error', () => down.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });
  const a = server.address();
  return { port: typeof a === 'object' && a ? a.port : 0, chunks };
}

const MAIL = 'MAIL FROM:<s@example.net> BODY=8BITMIME\r\n';
const RCPTS = 'RCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n';
for (const { flags, pipelining, enhanced } of [
  { flags: [], pipelining: true, enhanced: true },
  { flags: ['-p'], pipelining: false, enhanced: true },
  { flags: ['-E'], pipelining: true, enhanced: false },
  { flags: ['-p', '-E'], pipelining: false, enhanced: false },
]) {
  const name = `LMTP ${flags.join(' ') || 'default'}: ${pipelining ? 'PIPELINING: envelope in one write' : 'no PIPELINING: one command per write'}, enhanced ${enhanced ? "'2.2.0'" : 'null'}`;
  t.test(name, { skip }, async (t) => {
    const s = await sink(t, ['-L', ...flags]);
    const relay = await recorder(t, s.port);
    const c = s.client('lmtp', {}, relay.port);
    const res = await c.deliver(ENV, pieces(BODY, 64), { eightBit: true });
    const [code, text] = enhanced ? ['2.2.0', 'Ok'] : [null, '2.2.0 Ok'];  // -E: the code stays in the text
    t.same(brief(res), [
      ['a@example.org', 250, code, text, 'delivered'],
      ['b@example.org', 250, code, text, 'delivered'],
    ]);
    await c.close();
    const envelope = relay.chunks.filter((ch) => /^(?:MAIL|RCPT|DATA)/.test(ch));
    t.same(envelope, pipelining
      ? [MAIL + RCPTS + 'DATA\r\n']
      : [MAIL, 'RCPT TO:<a@example.org>\r\n', 'RCPT TO:<b@example.org>\r\n', 'DATA\r\n']);
    const [d] = await s.dumps();
    t.same(d?.message, Buffer.concat([asDumped(BODY), Buffer.from('\n')]));
  });
}
