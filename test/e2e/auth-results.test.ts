// Issue #14, trust, end to end against real workerd and real Dovecot: Cloudflare's verdicts
// (written by the test into the stand-in's Cloudflare block, as Email Routing writes them)
// arrive as our one Authentication-Results; a sender's field claiming our authserv-id is
// renamed; every other byte Dovecot stores is the message as sent.
import t, { type Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent } from '../../edge-agent/agent.ts';
import { validateConfig } from '../../edge-agent/agent-config.ts';
import { startDovecot, type DovecotFixture } from '../../bench/lib/dovecot.ts';
import { dovecotSkip } from '../helpers/skip.ts';
import { splitTrace, waitFor } from '../helpers/mail.ts';
import { AGENT_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';
import type { Verdicts } from '../../local/email-routing.ts';

const skip = dovecotSkip();
const ID = 'home.example.test';

async function setup(t: Test): Promise<{ w: TestWorker; dovecot: DovecotFixture }> {
  const dovecot = await startDovecot();
  t.teardown(() => dovecot.stop());
  const w = await startTestWorker({ verdictWaitMs: 0 });
  t.teardown(() => w.stop());
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-auth-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const agent = startAgent(validateConfig({
    workerUrl: w.agentUrl(), token: AGENT_TOKEN, target: `lmtp://127.0.0.1:${dovecot.lmtpPort}`, name: 'home', authservId: ID,
    heartbeatMs: 1000, maxReconnectMs: 1000,
  }), join(dir, 'state'), () => {});
  t.teardown(() => agent.stop(1000));
  await agent.connected;
  return { w, dovecot };
}

/** Posts `raw` as Email Routing hands it over: under a fresh Cloudflare block carrying `verdicts`. */
async function post(w: TestWorker, to: string, raw: Buffer, verdicts: Partial<Verdicts> = {}): Promise<number> {
  return (await w.post('sender@example.net', to, raw, { block: { verdicts } })).status;
}

/** What Dovecot stored after its own header lines: ours, then the rest. */
function ours(stored: Buffer | undefined): ReturnType<typeof splitTrace> {
  const s = stored ?? Buffer.alloc(0);
  const at = s.indexOf('Received: from cloudflare-email-routing by ');
  if (at < 0) return null;
  // Only whole header fields before ours: Return-Path, Delivered-To, Dovecot's Received.
  if (!/^(?:[A-Za-z-]+: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)*$/.test(s.subarray(0, at).toString('latin1'))) return null;
  return splitTrace(s.subarray(at));
}

const forged = (tag: string): Buffer => Buffer.from(
  'Authentication-Results: HOME.example.test; dmarc=pass header.from=bank.example\r\n' +
  'Authentication-Results: mx.other.example; spf=pass\r\n' +
  'From: "Bank" <alerts@bank.example>\r\n' +
  'Authentication-Results:\r\n (folded, with a comment) home.example.test; spf=pass\r\n' +
  `Message-ID: <${tag}@example.net>\r\nSubject: \xe6\x97\xa5 8-bit ${tag}\r\n\r\n` +
  'Authentication-Results: home.example.test; dmarc=pass (in the body: not a header)\r\n\xff\xfe\r\n', 'latin1');

t.test('Cloudflare\'s verdicts arrive in our Authentication-Results; forged ones are renamed, nothing else changes', { skip }, async (t) => {
  const { w, dovecot } = await setup(t);
  const raw = forged('cf-1');
  t.equal(await post(w, 'alice@example.test', raw, { dkim: 'fail', spf: 'softfail', dmarc: 'fail' }), 200);
  const [stored] = await waitFor('message in Dovecot', () => dovecot.readMessages('alice'), 1);
  const parts = ours(stored);
  t.ok(parts, 'Dovecot\'s header lines, our Received, our Authentication-Results');
  t.equal(parts?.auth, `Authentication-Results: ${ID};\r\n\tspf=softfail; dkim=fail; dmarc=fail; arc=none\r\n`, 'Cloudflare\'s verdicts, under our id');
  // The same bytes with the two forged names replaced by the same-length X-Claimed-Auth-Results.
  const want = Buffer.from(raw);
  for (const at of [0, raw.indexOf('Authentication-Results:\r\n')]) Buffer.from('X-Claimed-Auth-Results', 'latin1').copy(want, at);
  t.ok(parts?.rest.equals(want), 'the message as sent, only the two forged field names changed') ||
    t.equal(parts?.rest.toString('latin1'), want.toString('latin1'));
  t.equal(parts?.rest.byteLength, raw.byteLength, 'not a byte more or less');
  const text = stored?.toString('latin1') ?? '';
  t.equal(text.match(/^Authentication-Results: home\.example\.test;/gim)?.length, 2, 'ours, and the one quoted in the body');
  t.match(text, /\r\nAuthentication-Results: mx\.other\.example; spf=pass\r\n/, 'another host\'s kept');
});

t.test('verdicts come from Cloudflare\'s block only: a sender\'s own field naming Cloudflare is not believed', { skip }, async (t) => {
  const { w, dovecot } = await setup(t);
  // Below a field of the sender's own, so not part of Cloudflare's block however it is named.
  const raw = Buffer.from('Message-ID: <cf-2@example.net>\r\nAuthentication-Results: mx.cloudflare.net; dmarc=pass; spf=pass; dkim=pass\r\n\r\nhi\r\n');
  t.equal(await post(w, 'bob@example.test', raw), 200);
  const [stored] = await waitFor('message in Dovecot', () => dovecot.readMessages('bob'), 1);
  const parts = ours(stored);
  t.equal(parts?.auth, `Authentication-Results: ${ID};\r\n\tspf=none; dkim=none; dmarc=none; arc=none\r\n`);
  t.ok(parts?.rest.equals(raw), 'byte-exact: a field for another id is the sender\'s to keep');
  const plain = Buffer.from('Message-ID: <cf-3@example.net>\r\n\r\nno block\r\n');
  t.equal((await w.post('sender@example.net', 'alice@example.test', plain, { block: false })).status, 200);
  const [noBlock] = await waitFor('message in Dovecot', () => dovecot.readMessages('alice'), 1);
  t.equal(ours(noBlock)?.auth, `Authentication-Results: ${ID};\r\n\tspf=none; dkim=none; dmarc=none; arc=none\r\n`, 'no Cloudflare block: none, never a guess');
});
