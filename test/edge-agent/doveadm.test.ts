// The doveadm client (edge-agent/delivery/doveadm.ts) against a real Dovecot with its HTTP API on:
// the request and answer shapes are Dovecot's, not ours. A message is found by the queue id in
// our trace header in any mailbox of its user (Sieve filed it elsewhere), a detail is cut the
// way LMTP cuts it, users keyed by local part (auth_username_format = %Ln) are found by the
// address, and every way Dovecot cannot answer is an error, never "not stored".
import t from 'tap';
import { LmtpClient } from '../../lmtp-proxy/client.ts';
import { DAY_MS } from '../../edge-agent/delivery/journal.ts';
import { Doveadm, DoveadmError } from '../../edge-agent/delivery/doveadm.ts';
import { startDovecot, type DovecotFixture } from '../../bench/lib/dovecot.ts';
import { dovecotSkip } from '../helpers/skip.ts';
import { msgId } from './scripted-object.ts';

const skip = dovecotSkip();
const KEY = 'doveadm-test-key-0123';
const FILE_INTO = 'require ["fileinto", "mailbox"];\nif header :contains "subject" "[filed]" { fileinto :create "Filed"; }\n';

/** Stores a message carrying our trace header for queue id `id`. */
async function store(d: DovecotFixture, id: string, to: string[], subject = 'hello'): Promise<void> {
  const c = new LmtpClient({ protocol: 'lmtp', host: '127.0.0.1', port: d.lmtpPort });
  const raw = Buffer.from(`Received: from cloudflare-email-routing by dell (mailbridge) id ${id};\r\n\tSun, 06 Dec 2026 20:00:00 +0000\r\n` +
    `Subject: ${subject}\r\n\r\nbody\r\n`, 'latin1');
  const res = await c.deliver({ sender: 's@example.net', recipients: to }, (async function* () { yield raw; })());
  await c.close();
  if (!res.every((r) => r.outcome === 'delivered')) throw new Error(`not stored: ${JSON.stringify(res)}`);
}

t.test('found in any mailbox by the queue id; another id, another user or an old save date is not', { skip }, async (t) => {
  const d = await startDovecot({ doveadmApiKey: KEY, sieve: FILE_INTO });
  t.teardown(() => d.stop());
  const api = new Doveadm({ url: d.doveadmUrl ?? '', apiKey: KEY, recipientDelimiter: '' });
  await store(d, msgId(1), ['alice@example.test']);
  await store(d, msgId(2), ['alice@example.test', 'bob@example.test'], 'a [filed] one');
  t.equal((await d.readMessages('alice', 'Filed')).length, 1, 'Sieve filed the second one into Filed');
  const now = Date.now();
  t.same(await api.stored(msgId(1), ['alice@example.test', 'bob@example.test'], now),
    new Map([['alice@example.test', true], ['bob@example.test', false]]), 'INBOX');
  t.same(await api.stored(msgId(2), ['alice@example.test', 'bob@example.test'], now),
    new Map([['alice@example.test', true], ['bob@example.test', true]]), 'in Filed too');
  t.same(await api.stored(msgId(3), ['alice@example.test'], now), new Map([['alice@example.test', false]]), 'an id never stored');
  // The search reaches back a day before the first attempt, not further.
  t.same(await api.stored(msgId(1), ['alice@example.test'], now + 2 * DAY_MS), new Map([['alice@example.test', false]]), 'saved before the bound');
  t.same(await api.stored(msgId(1), ['ALICE@example.test'], now), new Map([['ALICE@example.test', true]]), 'the address in any case, as LMTP takes it');
});

t.test('the user: the detail cut as LMTP cuts it; an unknown user is an error, not "not stored"', { skip }, async (t) => {
  const d = await startDovecot({ doveadmApiKey: KEY });
  t.teardown(() => d.stop());
  await store(d, msgId(4), ['alice@example.test']);
  const plus = new Doveadm({ url: d.doveadmUrl ?? '', apiKey: KEY, recipientDelimiter: '+' });
  t.equal(plus.userOf('alice+news@example.test'), 'alice@example.test');
  t.equal(plus.userOf('+x@example.test'), '+x@example.test', 'no local part before the delimiter: left alone');
  t.same(await plus.stored(msgId(4), ['alice+news@example.test'], Date.now()), new Map([['alice+news@example.test', true]]));
  const none = new Doveadm({ url: d.doveadmUrl ?? '', apiKey: KEY, recipientDelimiter: '' });
  await t.rejects(none.stored(msgId(4), ['alice+news@example.test'], Date.now()),
    { name: 'DoveadmError', message: /search for alice\+news@example\.test: exit code 67: user unknown/ });
});

t.test('%Ln: users keyed by their local part are found by the envelope address', { skip }, async (t) => {
  const d = await startDovecot({ doveadmApiKey: KEY, usernameFormat: '%Ln' });
  t.teardown(() => d.stop());
  await store(d, msgId(5), ['alice@example.test']);
  t.equal((await d.readMessages('alice')).length, 1);
  const api = new Doveadm({ url: d.doveadmUrl ?? '', apiKey: KEY, recipientDelimiter: '' });
  t.same(await api.stored(msgId(5), ['alice@example.test', 'bob@example.test'], Date.now()),
    new Map([['alice@example.test', true], ['bob@example.test', false]]));
});

t.test('a wrong key, no API, a hung API: errors that say so', { skip }, async (t) => {
  const d = await startDovecot({ doveadmApiKey: KEY });
  t.teardown(() => d.stop());
  await new Doveadm({ url: d.doveadmUrl ?? '', apiKey: KEY, recipientDelimiter: '' }).check();
  t.pass('the key works: an empty batch answered');
  const wrong = new Doveadm({ url: d.doveadmUrl ?? '', apiKey: 'not-the-key', recipientDelimiter: '' });
  await t.rejects(wrong.check(), { message: /HTTP 401/ }, 'checked at start: a wrong key shows');
  await t.rejects(new Doveadm({ url: d.doveadmUrl ?? '', apiKey: `${KEY}\n`, recipientDelimiter: '' }).check(), { message: /must have no line end/ }, "a line end is part of the key");
  await t.rejects(wrong.stored(msgId(6), ['alice@example.test'], Date.now()), { message: /HTTP 401: the API key is not Dovecot's doveadm_api_key/ });
  const nothing = new Doveadm({ url: `http://127.0.0.1:${d.lmtpPort}`, apiKey: KEY, recipientDelimiter: '' });
  await t.rejects(nothing.stored(msgId(6), ['alice@example.test'], Date.now()), DoveadmError, 'an LMTP port is no API');
  const net = await import('node:net');
  const silent = net.createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.teardown(() => { silent.close(); });
  const port = (silent.address() as import('node:net').AddressInfo).port;
  const hung = new Doveadm({ url: `http://127.0.0.1:${port}/`, apiKey: KEY, recipientDelimiter: '', timeoutMs: 300 });
  t.equal(hung.endpoint, `http://127.0.0.1:${port}/doveadm/v1`);
  await t.rejects(hung.stored(msgId(6), ['alice@example.test'], Date.now()), { message: /no answer within 300 ms/ });
  await d.stop();
  await t.rejects(new Doveadm({ url: d.doveadmUrl ?? '', apiKey: KEY, recipientDelimiter: '' }).stored(msgId(6), ['alice@example.test'], Date.now()),
    { message: /ECONNREFUSED/ }, 'Dovecot down');
});
