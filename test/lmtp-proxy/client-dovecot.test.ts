// Conformance against the real thing: our LMTP client delivering into Dovecot (TCP and
// unix socket, BDAT and DATA), per-recipient replies, quota, and 25 MiB byte-exact.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { LmtpClient, type ClientOptions } from '../../lmtp-proxy/client.ts';
import type { Target } from '../../lmtp-proxy/target.ts';
import { startDovecot, type DovecotFixture, type DovecotOptions } from '../../bench/lib/dovecot.ts';
import { dovecotSkip } from '../helpers/skip.ts';

const skip = dovecotSkip();
const MiB = 1024 * 1024;

async function withDovecot(t: Test, opts: DovecotOptions = {}): Promise<DovecotFixture> {
  const d = await startDovecot(opts);
  t.teardown(() => d.stop());
  return d;
}

function client(t: Test, target: Target, opts: ClientOptions = {}): LmtpClient {
  const c = new LmtpClient(target, { localName: 'client.test', ...opts });
  t.teardown(() => c.close());
  return c;
}

const tcp = (d: DovecotFixture): Target => ({ protocol: 'lmtp', host: '127.0.0.1', port: d.lmtpPort });

/** Header and body lines that test the framing: dots at line starts, a lone '.', 8-bit. */
const BODY = Buffer.concat([
  Buffer.from('From: s@example.net\r\nTo: alice@example.test\r\nSubject: conformance\r\nMessage-ID: <c1@example.net>\r\n\r\n', 'latin1'),
  Buffer.from('.starts with a dot\r\n..two dots\r\n.\r\n', 'latin1'),
  Buffer.from([0x93, 0xfa, 0x96, 0x7b, 0x8c, 0xea, 0x0d, 0x0a]),  // Shift_JIS
  Buffer.from('last line\r\n', 'latin1'),
]);

async function* pieces(b: Uint8Array, size = 7): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.byteLength; i += size) yield b.subarray(i, i + size);
}

/** Dovecot prepends header lines (Return-Path, Delivered-To, Received); the rest must be ours. */
function endsWith(stored: Buffer | undefined, body: Buffer): boolean {
  if (!stored || stored.length < body.length) return false;
  const prefix = stored.subarray(0, stored.length - body.length).toString('latin1');
  return stored.subarray(stored.length - body.length).equals(body) && /^(?:[A-Za-z-]+: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)+$/.test(prefix);
}

for (const mode of ['BDAT', 'DATA'] as const) {
  const disable: ClientOptions['disable'] = mode === 'DATA' ? ['CHUNKING'] : [];
  t.test(`${mode}: two users and an unknown one; dots and 8-bit stored exactly`, { skip }, async (t) => {
    const d = await withDovecot(t);
    const res = await client(t, tcp(d), { disable }).deliver(
      { sender: 's@example.net', recipients: ['alice@example.test', 'nobody@example.test', 'Bob@Example.Test'] },
      pieces(BODY), { size: BODY.length, eightBit: true });
    t.same(res.map((r) => [r.recipient, r.code, r.enhanced, r.outcome]), [
      ['alice@example.test', 250, '2.0.0', 'delivered'],
      ['nobody@example.test', 550, '5.1.1', 'permfail'],
      ['Bob@Example.Test', 250, '2.0.0', 'delivered'],
    ]);
    t.match(res[1]?.text, /User doesn't exist/);
    for (const user of ['alice', 'bob']) {
      const stored = await d.readMessages(user);
      t.equal(stored.length, 1, `${user}: one message`);
      t.ok(endsWith(stored[0], BODY), `${user}: Dovecot's headers, then exactly our bytes`);
    }
  });
}

t.test('unix socket, and two messages on one connection', { skip }, async (t) => {
  const d = await withDovecot(t);
  const c = client(t, { protocol: 'lmtp', path: d.lmtpSocket });
  for (let i = 0; i < 2; i++) {
    const res = await c.deliver({ sender: '', recipients: ['alice@example.test'] }, pieces(BODY, 4096));
    t.equal(res[0]?.outcome, 'delivered');
  }
  const stored = await d.readMessages('alice');
  t.equal(stored.length, 2);
  t.ok(stored.every((m) => endsWith(m, BODY)));
  t.match(stored[0]?.toString('latin1'), /^Return-Path: <>\r\n/, 'null sender stored as <>');
});

t.test('kept connection: messages follow one another without RSET; after a Dovecot restart the next one goes out once on a new connection', { skip }, async (t) => {
  const d = await withDovecot(t);
  for (const disable of [[], ['CHUNKING']] as const) {
    // The unix socket keeps its path across the restart (the TCP port may not).
    const c = client(t, { protocol: 'lmtp', path: d.lmtpSocket }, { disable });
    const send = async (): Promise<string[]> =>
      (await c.deliver({ sender: '', recipients: ['alice@example.test', 'bob@example.test'] }, pieces(BODY, 4096))).map((r) => r.outcome);
    t.same([...await send(), ...await send()], ['delivered', 'delivered', 'delivered', 'delivered'], `${disable.length ? 'DATA' : 'BDAT'}: back to back`);
    await d.restart();  // closes the kept connection under the client
    t.same(await send(), ['delivered', 'delivered'], 'after the restart');
  }
  for (const user of ['alice', 'bob']) {
    const stored = await d.readMessages(user);
    t.equal(stored.length, 6, `${user}: each message stored exactly once`);
    t.ok(stored.every((m) => endsWith(m, BODY)));
  }
});

t.test('over quota: 552 5.2.2 for that recipient only; with quota_full_tempfail 452 4.2.2', { skip }, async (t) => {
  const big = Buffer.concat([BODY, Buffer.alloc(8192, 'x'), Buffer.from('\r\n')]);
  for (const [tempfail, code, enhanced, outcome] of [[false, 552, '5.2.2', 'permfail'], [true, 452, '4.2.2', 'tempfail']] as const) {
    const d = await withDovecot(t, { quotaUser: 'carol', quotaBytes: 1024, quotaTempfail: tempfail });
    const res = await client(t, tcp(d)).deliver({ sender: 's@example.net', recipients: ['carol@example.test', 'alice@example.test'] }, pieces(big, 1000));
    t.same(res.map((r) => [r.code, r.enhanced, r.outcome]), [[code, enhanced, outcome], [250, '2.0.0', 'delivered']]);
    t.equal((await d.readMessages('carol')).length, 0, 'nothing stored for carol');
    t.equal((await d.readMessages('alice')).length, 1);
  }
});

/** A 25 MiB message made as it is sent, 64 KiB at a time: dots and CRLF everywhere. */
function* bigBody(total: number): Generator<Buffer> {
  yield Buffer.from('Subject: 25 MiB\r\n\r\n');
  let sent = 19;
  let n = 0;
  while (sent < total) {
    const line = Buffer.from(`${n % 3 === 0 ? '.' : ''}line ${n++} ${'.'.repeat(n % 70)}\r\n`);
    const block: Buffer[] = [];
    let size = 0;
    while (size < 65536 && sent + size + line.length <= total) { block.push(line); size += line.length; }
    if (size === 0) break;
    sent += size;
    yield Buffer.concat(block);
  }
}

// 'BDAT 256 KiB': as the agent sends (edge-agent/delivery/deliver.ts LMTP_BDAT_BYTES).
for (const mode of ['BDAT', 'BDAT 256 KiB', 'DATA'] as const) {
  t.test(`${mode}: a 25 MiB message is stored byte-exact`, { skip }, async (t) => {
    const d = await withDovecot(t);
    const hash = createHash('sha256');
    let size = 0;
    async function* body(): AsyncGenerator<Uint8Array> {
      for (const b of bigBody(25 * MiB)) { hash.update(b); size += b.length; yield b; }
    }
    const res = await client(t, tcp(d), { disable: mode === 'DATA' ? ['CHUNKING'] : [], ...(mode === 'BDAT 256 KiB' ? { bdatChunkBytes: 256 * 1024 } : {}) })
      .deliver({ sender: 's@example.net', recipients: ['alice@example.test'] }, body(), { size: 25 * MiB });
    t.same(res.map((r) => r.outcome), ['delivered']);
    t.ok(size > 25 * MiB - 200, `sent ${size} bytes`);
    const [stored] = await d.readMessages('alice');
    const tail = stored?.subarray(stored.length - size);
    t.equal(createHash('sha256').update(tail ?? Buffer.alloc(0)).digest('hex'), hash.digest('hex'), 'SHA-256 of the stored message body');
  });
}

t.test('a small message in one write (size given) gets the same answers as step by step, in every refusal shape', { skip }, async (t) => {
  const d = await withDovecot(t, { users: ['alice', 'bob'], quotaUser: 'carol', quotaBytes: 1024 });
  const big = Buffer.concat([BODY, Buffer.alloc(2048, 'x'), Buffer.from('\r\n')]);  // over carol's quota
  const shapes: [string, string[], Buffer][] = [
    ['all accepted', ['alice@example.test', 'bob@example.test'], BODY],
    ['one unknown', ['nobody@example.test', 'alice@example.test'], BODY],
    ['all unknown', ['nobody@example.test', 'none@example.test'], BODY],
    ['one over quota', ['carol@example.test', 'bob@example.test'], big],
  ];
  // One kept connection each: a wrong count of final replies would leave it out of step for the next shape.
  const oneWrite = client(t, tcp(d));
  const stepwise = client(t, tcp(d));
  const brief = (rs: { recipient: string; code: number; enhanced: string | null; outcome: string }[]) => rs.map((r) => [r.recipient, r.code, r.enhanced, r.outcome]);
  for (const [name, recipients, body] of shapes) {
    const a = await oneWrite.deliver({ sender: 's@example.net', recipients }, pieces(body, 100), { size: body.length });
    const b = await stepwise.deliver({ sender: 's@example.net', recipients }, pieces(body, 100));
    t.same(brief(a), brief(b), `${name}: the same answers`);
  }
  t.same((await oneWrite.deliver({ sender: '', recipients: ['alice@example.test'] }, pieces(BODY), { size: BODY.length })).map((r) => r.outcome), ['delivered'], 'the kept connection is still in step');
  for (const [user, n] of [['alice', 5], ['bob', 4], ['carol', 0]] as const) {
    const stored = await d.readMessages(user);
    t.equal(stored.length, n, `${user}: ${n} stored`);
    t.ok(stored.every((m) => endsWith(m, BODY) || endsWith(m, big)), `${user}: exactly our bytes`);
  }
});
