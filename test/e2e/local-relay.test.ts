// The walking skeleton, end to end on one machine: SMTP ingress -> Worker and its
// Durable Object in real workerd -> WebSocket -> edge-agent -> embedded LMTP
// target -> Maildir. What is stored must be our trace header + the exact bytes sent.
import t, { type Test } from 'tap';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../edge-agent/ops/log.ts';
import { startLocalRelay, type LocalRelay } from '../../local/relay.ts';
import { attachmentMessage, drained, maildirNew, message, sendSmtp, shiftJisMessage, splitTrace, waitFor } from '../helpers/mail.ts';
import { ciSkip } from '../helpers/skip.ts';

async function relay(t: Test, opts: { maxBytes?: number; allowedDomains?: string[] } = {}): Promise<LocalRelay> {
  const dataDir = await mkdtemp(join(tmpdir(), 'mailbridge-e2e-'));
  const r = await startLocalRelay({ dataDir, smtpPort: 0, log: silentLogger, ...opts });
  t.teardown(async () => {
    await r.stop();
    await rm(dataDir, { recursive: true, force: true });
  });
  return r;
}

const box = (r: LocalRelay, rcpt: string): string => join(r.maildirRoot ?? '', rcpt);

t.test('one 8-bit message to two recipients arrives byte-exact in each Maildir', async (t) => {
  const r = await relay(t);
  const raw = shiftJisMessage('sjis-1');
  const res = await sendSmtp(r.smtpPort, 'sender@example.net', ['alice@example.test', 'bob@example.test'], raw);
  t.same(res.map((x) => [x.code, x.outcome]), [[250, 'delivered'], [250, 'delivered']], 'ingress accepted');
  const ids = /queued as ([0-9a-f]{32}) ([0-9a-f]{32})/.exec(res[0]?.text ?? '');
  t.ok(ids, `queue ids in the reply: ${res[0]?.text}`);
  for (const [i, rcpt] of ['alice@example.test', 'bob@example.test'].entries()) {
    const [stored] = await waitFor(`message for ${rcpt}`, () => maildirNew(box(r, rcpt)), 1);
    const parts = splitTrace(stored ?? Buffer.alloc(0));
    t.ok(parts, 'starts with the trace header');
    t.equal(parts?.agent, 'local-agent');
    t.equal(parts?.id, ids?.[i + 1], 'trace header names the queue id of this copy');
    t.ok(parts?.rest.equals(raw), `${rcpt}: the rest is exactly the DATA content`);
  }
  await drained(() => r.runtime.summary());
  t.equal(r.agent.stats.delivered, 2, 'acked: the queue is empty');
});

t.test('a 3 MiB message (several 1 MiB chunks in the queue) arrives byte-exact', async (t) => {
  const r = await relay(t);
  const raw = attachmentMessage('big-1', 2 * 1024 * 1024 + 12345);
  t.ok(raw.byteLength > 2 * 1024 * 1024, `message is ${raw.byteLength} bytes`);
  const res = await sendSmtp(r.smtpPort, '', ['alice@example.test'], raw);
  t.equal(res[0]?.code, 250, 'null sender <> accepted (a bounce)');
  const [stored] = await waitFor('big message', () => maildirNew(box(r, 'alice@example.test')), 1);
  t.ok(splitTrace(stored ?? Buffer.alloc(0))?.rest.equals(raw), 'byte-exact');
});

t.test('swaks, as in the README, ends up as a file in the Maildir', { skip: ciSkip('swaks', spawnSync('swaks', ['--version']).error ? 'swaks not installed (apt-get install swaks)' : false) }, async (t) => {
  const r = await relay(t);
  // Not spawnSync: the relay runs in this process and must keep answering.
  const out = await promisify(execFile)('swaks', ['--server', `127.0.0.1:${r.smtpPort}`, '--to', 'alice@example.test',
    '--from', 'me@example.net', '--header', 'Subject: hello from swaks'], { encoding: 'utf8', timeout: 30_000 });
  t.match(out.stdout, /<- {2}250 2\.0\.0 Ok: queued as [0-9a-f]{32}/);
  const [stored] = await waitFor('swaks message', () => maildirNew(box(r, 'alice@example.test')), 1);
  t.match(splitTrace(stored ?? Buffer.alloc(0))?.rest.toString('latin1'), /^Date: .*\r\nTo: alice@example\.test\r\n[\s\S]*Subject: hello from swaks\r\n/);
});

t.test('policy answers come back as SMTP codes', async (t) => {
  const r = await relay(t, { maxBytes: 64 * 1024, allowedDomains: ['example.test'] });
  const small = message({ Subject: 'x' }, Buffer.from('hi\r\n'));
  const [other] = await sendSmtp(r.smtpPort, 's@example.net', ['someone@elsewhere.test'], small);
  t.equal(other?.code, 550, 'a domain we do not serve');
  t.match(other?.text, /5\.7\.1 Relaying denied/);
  const tooBig = Buffer.alloc(100 * 1024, 'a');
  const [declared] = await sendSmtp(r.smtpPort, 's@example.net', ['alice@example.test'], tooBig);
  t.equal(declared?.code, 552, 'over the size limit, declared with SIZE=');
  t.match(declared?.text, /maximum message size 65536/);
  const [counted] = await sendSmtp(r.smtpPort, 's@example.net', ['alice@example.test'], tooBig, { declareSize: false });
  t.equal(counted?.code, 552, 'over the size limit, counted during DATA');
  t.match(counted?.text, /5\.3\.4 Message size exceeds the limit of 65536 bytes/);
  const [mixed, mixed2] = await sendSmtp(r.smtpPort, 's@example.net', ['alice@example.test', 'x@elsewhere.test'], small);
  t.equal(mixed?.code, 250, 'one good recipient: the message is accepted');
  t.match(mixed2?.text, /refused <x@elsewhere\.test>: 5\.7\.1/, 'and the refused one is named');
  await waitFor('accepted copy', () => maildirNew(box(r, 'alice@example.test')), 1);
  t.same(await maildirNew(box(r, 'x@elsewhere.test')), [], 'nothing stored for the refused one');
});

t.test("Miniflare's local email trigger runs the same email() handler", async (t) => {
  const r = await relay(t);
  const raw = message({ From: 'a@example.net', To: 'bob@example.test', 'Message-ID': '<trigger-1@example.net>', Subject: 'via trigger' },
    Buffer.from('through /cdn-cgi/handler/email\r\n', 'latin1'));
  const url = new URL('/cdn-cgi/handler/email', r.workerUrl);
  url.searchParams.set('from', 'a@example.net');
  url.searchParams.set('to', 'bob@example.test');
  const res = await fetch(url, { method: 'POST', body: raw });
  t.equal(res.status, 200, await res.text());
  const [stored] = await waitFor('triggered message', () => maildirNew(box(r, 'bob@example.test')), 1);
  t.ok(splitTrace(stored ?? Buffer.alloc(0))?.rest.equals(raw), 'byte-exact');
});
