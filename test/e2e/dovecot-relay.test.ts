// The whole path into a real Dovecot over LMTP (TCP and unix socket), bodies through R2 as
// deployed: what Dovecot stores ends with our trace header + the exact bytes sent, and an
// unknown user's permanent refusal is final (the queue does not retry it).
import t, { type Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../edge-agent/ops/log.ts';
import { startLocalRelay, type LocalRelay } from '../../local/relay.ts';
import { startDovecot, type DovecotFixture } from '../../bench/lib/dovecot.ts';
import { dovecotSkip } from '../helpers/skip.ts';
import { attachmentMessage, drained, sendSmtp, shiftJisMessage, splitTrace, TRACE, waitFor } from '../helpers/mail.ts';

const skip = dovecotSkip();

async function setup(t: Test, target: (d: DovecotFixture) => string): Promise<{ dovecot: DovecotFixture; relay: LocalRelay }> {
  const dovecot = await startDovecot();
  t.teardown(() => dovecot.stop());
  const dataDir = await mkdtemp(join(tmpdir(), 'mailbridge-e2e-dovecot-'));
  const relay = await startLocalRelay({ dataDir, smtpPort: 0, target: target(dovecot), log: silentLogger });
  t.teardown(async () => {
    await relay.stop();
    await rm(dataDir, { recursive: true, force: true });
  });
  return { dovecot, relay };
}

/** Dovecot prepends its own header lines; after them comes our trace header, then the message. */
function ours(stored: Buffer): Buffer | null {
  const at = stored.indexOf('Received: from cloudflare-email-routing by ');
  if (at < 0) return null;
  const prefix = stored.subarray(0, at).toString('latin1');
  // Only whole header fields before ours: Return-Path, Delivered-To, Dovecot's Received.
  if (!/^(?:[A-Za-z-]+: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)*$/.test(prefix)) return null;
  return stored.subarray(at);
}

t.test('over TCP: 8-bit mail to a known and an unknown user', { skip }, async (t) => {
  const { dovecot, relay } = await setup(t, (d) => `lmtp://127.0.0.1:${d.lmtpPort}`);
  const raw = shiftJisMessage('dovecot-1');
  const res = await sendSmtp(relay.smtpPort, 'sender@example.net', ['alice@example.test', 'nobody@example.test'], raw);
  t.equal(res[0]?.code, 250, 'accepted: one recipient was delivered');
  t.match(res[0]?.text, /refused <nobody@example\.test>: 5\.1\.1 <nobody@example\.test>: .*User doesn't exist.*\(550 from the destination mail server\)/,
    "the unknown one is refused in the reply, in Dovecot's words (the synchronous verdict)");
  const [stored] = await waitFor('message in Dovecot', () => dovecot.readMessages('alice'), 1);
  const tail = ours(stored ?? Buffer.alloc(0));
  t.ok(tail, 'Dovecot headers, then ours');
  t.match(tail?.toString('latin1') ?? '', TRACE);
  t.ok(splitTrace(tail ?? Buffer.alloc(0))?.rest.equals(raw), 'then exactly the DATA content');
  await drained(() => relay.runtime.summary());
  t.equal(relay.agent.stats.permfail, 1, 'the unknown user is a permanent failure, acked and not retried');
  t.equal(relay.agent.stats.delivered, 1);
  t.same(await dovecot.readMessages('alice'), [stored], 'exactly one copy');
});

t.test('over the unix socket: a 3 MiB message, byte-exact', { skip }, async (t) => {
  const { dovecot, relay } = await setup(t, (d) => `lmtp+unix:${d.lmtpSocket}`);
  const raw = attachmentMessage('dovecot-2', 2 * 1024 * 1024 + 777);
  const res = await sendSmtp(relay.smtpPort, 'sender@example.net', ['bob@example.test'], raw);
  t.equal(res[0]?.code, 250);
  const [stored] = await waitFor('message in Dovecot', () => dovecot.readMessages('bob'), 1);
  t.ok(splitTrace(ours(stored ?? Buffer.alloc(0)) ?? Buffer.alloc(0))?.rest.equals(raw), 'byte-exact');
});

t.test('only unknown recipients: the sender gets a 550 with 5.1.1, nothing stays queued', { skip }, async (t) => {
  const { dovecot, relay } = await setup(t, (d) => `lmtp://127.0.0.1:${d.lmtpPort}`);
  const [res] = await sendSmtp(relay.smtpPort, 'sender@example.net', ['nobody@example.test'], shiftJisMessage('dovecot-3'));
  t.equal(res?.code, 550);
  t.match(res?.text, /^5\.1\.1 <nobody@example\.test>: /);
  t.same(Object.values(await relay.runtime.summary()).filter((n) => n > 0), [], 'the queue is empty');
  t.same(await dovecot.readMessages('alice'), []);
});

t.test('a 25 MiB message through R2 into Dovecot, byte-exact; its body is deleted from R2 once acked', { skip }, async (t) => {
  const { dovecot, relay } = await setup(t, (d) => `lmtp://127.0.0.1:${d.lmtpPort}`);
  // 18 MiB base64-encoded: about 24.6 MiB, just under the 25 MiB limit (MAX_MESSAGE_BYTES).
  const raw = attachmentMessage('dovecot-25', 18 * 1024 * 1024);
  t.ok(raw.length > 24 * 1024 * 1024 && raw.length <= 25 * 1024 * 1024, `${raw.length} bytes`);
  const [res] = await sendSmtp(relay.smtpPort, 'sender@example.net', ['alice@example.test'], raw);
  t.equal(res?.code, 250);
  const [stored] = await waitFor('message in Dovecot', () => dovecot.readMessages('alice'), 1, 120_000);
  t.ok(splitTrace(ours(stored ?? Buffer.alloc(0)) ?? Buffer.alloc(0))?.rest.equals(raw), 'byte-exact');
  await drained(() => relay.runtime.summary());
  const bucket = await relay.runtime.mf.getR2Bucket('BODIES');
  for (let i = 0; i < 50 && (await bucket.list()).objects.length > 0; i++) await new Promise((r) => setTimeout(r, 100));
  t.same((await bucket.list()).objects, [], 'nothing left in R2');
  t.equal(relay.agent.stats.delivered, 1, 'delivered once');
});
