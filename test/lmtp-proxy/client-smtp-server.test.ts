// The client against a real smtp-server (lmtp: true unless said otherwise), on 127.0.0.1:0.
import t from 'tap';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { SMTPServer, type SMTPServerOptions, type SMTPServerDataResult, type SMTPServerSession, type SMTPServerAddressArgs } from 'smtp-server';
import { LmtpClient, type ClientOptions } from '../../lmtp-proxy/client.ts';
import type { Target } from '../../lmtp-proxy/target.ts';

interface Received { from: string; args: SMTPServerAddressArgs | false; to: string[]; body: Buffer; transaction: number }
interface Hooks {
  rcpt?: (address: string) => Error | null;
  data?: (m: Received) => Error | null | string | SMTPServerDataResult[];
}

const reject = (code: number, message: string): Error => Object.assign(new Error(message), { responseCode: code });

async function start(t: Tap, hooks: Hooks = {}, options: SMTPServerOptions = {}, listenPath?: string) {
  const state = { connections: 0, closed: 0, messages: [] as Received[] };
  const server = new SMTPServer({
    lmtp: true, disabledCommands: ['AUTH', 'STARTTLS'], authOptional: true, logger: false,
    hideENHANCEDSTATUSCODES: false, size: 64 * 1024 * 1024, closeTimeout: 100, ...options,
    onConnect(_s, cb) { state.connections++; cb(); },
    onClose() { state.closed++; },
    onRcptTo(address, _s, cb) { cb(hooks.rcpt?.(address.address) ?? null); },
    onData(stream, session: SMTPServerSession, cb) {
      const bufs: Buffer[] = [];
      stream.on('data', (b: Buffer) => bufs.push(b));
      stream.on('end', () => {
        const m: Received = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '?',
          args: session.envelope.mailFrom ? session.envelope.mailFrom.args : false,
          to: session.envelope.rcptTo.map((r) => r.address),
          body: Buffer.concat(bufs),
          transaction: session.transaction,
        };
        state.messages.push(m);
        const r = hooks.data?.(m) ?? null;
        if (r instanceof Error) cb(r);
        else cb(null, r ?? undefined);
      });
    },
  });
  await new Promise<void>((resolve) => (listenPath ? server.listen(listenPath, resolve) : server.listen(0, '127.0.0.1', resolve)));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const target = (protocol: 'lmtp' | 'smtp' = 'lmtp'): Target => (listenPath ? { protocol: 'lmtp', path: listenPath } : { protocol, host: '127.0.0.1', port });
  const client = (options: ClientOptions = {}, protocol: 'lmtp' | 'smtp' = 'lmtp'): LmtpClient => {
    const c = new LmtpClient(target(protocol), { localName: 'client.test', ...options });
    t.teardown(() => c.close());
    return c;
  };
  return { state, client };
}
type Tap = { teardown(fn: () => unknown): void };

async function* chunks(...parts: (string | Uint8Array)[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield typeof p === 'string' ? Buffer.from(p, 'latin1') : p;
}

// Splits a buffer into chunks of 1..max bytes (seeded), yielded one by one.
async function* split(buf: Buffer, max: number, seed: number): AsyncGenerator<Uint8Array> {
  let x = seed;
  for (let i = 0; i < buf.length; ) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const n = 1 + (x % max);
    yield new Uint8Array(buf.subarray(i, i + n));  // a copy, as a file reader would hand it out
    i += n;
  }
}

t.test('a RCPT rejected with 550 gets its own result and is not expected after DATA', async (t) => {
  const { state, client } = await start(t, { rcpt: (a) => (a === 'bad@example.org' ? reject(550, 'no such user') : null) });
  const res = await client().deliver({ sender: 'from@example.net', recipients: ['bad@example.org', 'good@example.org'] }, chunks('Subject: hi\r\n\r\nhello\r\n'));
  t.same(res, [
    { recipient: 'bad@example.org', code: 550, enhanced: '5.1.1', text: 'no such user', outcome: 'permfail' },
    { recipient: 'good@example.org', code: 250, enhanced: '2.6.0', text: 'OK: message accepted', outcome: 'delivered' },
  ]);
  t.same(state.messages.map((m) => m.to), [['good@example.org']]);
});

t.test('LMTP per-recipient replies after DATA: 452 for one, 250 for the other', async (t) => {
  const { client } = await start(t, { data: () => [reject(452, 'mailbox full'), 'saved as 42'] });
  const res = await client().deliver({ sender: '', recipients: ['a@example.org', 'b@example.org'] }, chunks('x\r\n'));
  t.same(res, [
    { recipient: 'a@example.org', code: 452, enhanced: '4.2.2', text: 'mailbox full', outcome: 'tempfail' },
    { recipient: 'b@example.org', code: 250, enhanced: '2.6.0', text: 'saved as 42', outcome: 'delivered' },
  ]);
});

t.test('body bytes arrive exactly: line-start dots, bare LF, 8-bit, NUL, small chunks', async (t) => {
  const { state, client } = await start(t);
  const body = Buffer.concat([
    Buffer.from('Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nbare\n.lf dot\r\n', 'latin1'),
    Buffer.from([0xe9, 0xff, 0x00, 0x80, 0x0d, 0x0a, 0x2e]),  // ends in a line-start dot, no CRLF
  ]);
  const res = await client().deliver({ sender: 's@example.net', recipients: ['r@example.org'] }, split(body, 3, 7), { eightBit: true, size: body.length });
  t.equal(res[0]?.outcome, 'delivered');
  t.same(state.messages[0]?.body, Buffer.concat([body, Buffer.from('\r\n')]), 'the only byte added is the final CRLF');
  t.same(state.messages[0]?.args, { BODY: '8BITMIME', SIZE: String(body.length) });
});

t.test('a 1.5 MiB body in many small chunks arrives exactly', async (t) => {
  const { state, client } = await start(t);
  const body = Buffer.alloc(1.5 * 1024 * 1024);
  const alphabet = Buffer.from('.\r\n.\nab\x00\xff ', 'latin1');
  let x = 12345;
  for (let i = 0; i < body.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    body[i] = alphabet[(x >>> 16) % alphabet.length] ?? 0;
  }
  body.write('\r\n', body.length - 2, 'latin1');
  const res = await client().deliver({ sender: 's@example.net', recipients: ['r@example.org'] }, split(body, 2000, 99));
  t.equal(res[0]?.outcome, 'delivered');
  t.equal(state.messages[0]?.body.length, body.length);
  t.ok(state.messages[0]?.body.equals(body), 'same bytes');
});

t.test('two messages reuse one connection, one transaction after the other (no RSET needed)', async (t) => {
  const { state, client } = await start(t);
  const c = client();
  const r1 = await c.deliver({ sender: 'a@example.net', recipients: ['r@example.org'] }, chunks('one\r\n'));
  const r2 = await c.deliver({ sender: 'b@example.net', recipients: ['r@example.org'] }, chunks('two\r\n'));
  t.same([r1[0]?.outcome, r2[0]?.outcome], ['delivered', 'delivered']);
  t.equal(state.connections, 1);
  t.same(state.messages.map((m) => [m.from, m.body.toString(), m.transaction]), [['a@example.net', 'one\r\n', 1], ['b@example.net', 'two\r\n', 2]]);
  await c.close();
  await new Promise((r) => setTimeout(r, 20));
  t.equal(state.closed, 1, 'close() ended the connection');
});

t.test('deliver() calls made at once are serialized on one connection', async (t) => {
  const { state, client } = await start(t);
  const c = client();
  const all = await Promise.all([1, 2, 3].map((i) => c.deliver({ sender: '', recipients: [`r${i}@example.org`] }, chunks(`m${i}\r\n`))));
  t.same(all.map((r) => r[0]?.outcome), ['delivered', 'delivered', 'delivered']);
  t.equal(state.connections, 1);
  t.same(state.messages.map((m) => [m.to[0], m.body.toString()]), [['r1@example.org', 'm1\r\n'], ['r2@example.org', 'm2\r\n'], ['r3@example.org', 'm3\r\n']]);
});

t.test('SMTP: one reply after DATA applies to every accepted recipient', async (t) => {
  const { client } = await start(t, { data: () => reject(451, 'try again') }, { lmtp: false });
  const res = await client({}, 'smtp').deliver({ sender: '', recipients: ['a@example.org', 'b@example.org'] }, chunks('x\r\n'));
  t.same(res.map((r) => [r.code, r.enhanced, r.text, r.outcome]), [[451, '4.3.0', 'try again', 'tempfail'], [451, '4.3.0', 'try again', 'tempfail']]);
});

t.test('LMTP over a unix socket', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lmtp-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { state, client } = await start(t, {}, {}, path.join(dir, 'lmtp.sock'));
  const res = await client().deliver({ sender: '', recipients: ['r@example.org'] }, chunks('unix\r\n'));
  t.equal(res[0]?.outcome, 'delivered');
  t.equal(state.messages[0]?.body.toString(), 'unix\r\n');
});

t.test('a non-ASCII address adds SMTPUTF8 to MAIL FROM', async (t) => {
  const { state, client } = await start(t);
  const res = await client().deliver({ sender: 'jörg@example.net', recipients: ['ålesund@example.org'] }, chunks('x\r\n'));
  t.equal(res[0]?.outcome, 'delivered');
  t.same([state.messages[0]?.from, state.messages[0]?.to, state.messages[0]?.args], ['jörg@example.net', ['ålesund@example.org'], { SMTPUTF8: true }]);
});

t.test('an address with CR, LF, NUL, < or > is refused before any byte is sent', async (t) => {
  const { state, client } = await start(t);
  const c = client();
  for (const bad of ['a@b\r\nRSET', 'a@b\n', 'a\0@b', 'a>@b', '<a@b']) {
    await t.rejects(c.deliver({ sender: '', recipients: ['ok@example.org', bad] }, chunks('x')), TypeError, JSON.stringify(bad));
    await t.rejects(c.deliver({ sender: bad, recipients: ['ok@example.org'] }, chunks('x')), TypeError);
  }
  await t.rejects(c.deliver({ sender: '', recipients: [''] }, chunks('x')), TypeError, 'empty recipient');
  await new Promise((r) => setTimeout(r, 20));
  t.equal(state.connections, 0, 'never connected');
});

t.test('connection refused: every recipient tempfails with ECONNECTION', async (t) => {
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const address = probe.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await new Promise((r) => probe.close(r));
  const c = new LmtpClient({ protocol: 'lmtp', host: '127.0.0.1', port });
  const res = await c.deliver({ sender: '', recipients: ['a@example.org', 'b@example.org'] }, chunks('x'));
  t.same(res.map((r) => [r.code, r.enhanced, r.outcome]), [[0, null, 'tempfail'], [0, null, 'tempfail']]);
  t.match(res[0]?.text, /^ECONNECTION: lmtp:\/\/127\.0\.0\.1:\d+: connect ECONNREFUSED/);
  await c.close();
});
