// Issue #15, bodies in R2: real workerd with its R2 bucket (BODIES, as deployed), the real
// agent in process, a scripted LMTP peer that keeps what it stored. email() puts the bytes
// after Cloudflare's block into R2; the agent fetches them through the Worker and checks R2's
// MD5. Every way a message leaves the queue (ack, bounce then purge, delete, retention) deletes
// its R2 object; a retry under a fresh block is one message.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { startAgent, type Agent } from '../../edge-agent/agent.ts';
import { main } from '../../relayctl/cli.ts';
import { validateConfig } from '../../edge-agent/agent-config.ts';
import { cloudflareBlock } from '../../local/email-routing.ts';
import { startLmtpPeer, type LmtpPeer } from '../edge-agent/lmtp-peer.ts';
import { startSmtpSink } from '../helpers/smtp-sink.ts';
import { poll } from '../helpers/wait.ts';
import { AGENT_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const ADMIN = 'admin-token-0123456789abcdef';
const FROM = 's@example.net';
const TO = 'alice@example.test';

interface Env { w: TestWorker; peer: LmtpPeer; events: { event: string; [k: string]: unknown }[]; agent(bounceRelay?: string): Agent }

async function setup(t: Test, vars: Record<string, string> = {}): Promise<Env> {
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { ADMIN_TOKEN: ADMIN, ...vars } });
  t.teardown(() => w.stop());
  const peer = await startLmtpPeer('store');
  t.teardown(() => peer.close());
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-r2-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const events: Env['events'] = [];
  const agents: Agent[] = [];
  t.teardown(async () => { for (const a of agents) await a.stop(1000); });
  return {
    w, peer, events,
    agent(bounceRelay) {
      const config = validateConfig({
        workerUrl: w.agentUrl(), token: AGENT_TOKEN, target: peer.url, name: 'home', heartbeatMs: 1000,
        maxReconnectMs: 1000, traceHeader: false, ...(bounceRelay ? { bounceRelay, reportingMta: 'home.example.test' } : {}),
      });
      const a = startAgent(config, join(dir, 'state'), (event, fields = {}) => { events.push({ event, ...fields }); }, {});
      agents.push(a);
      return a;
    },
  };
}

async function admin(w: TestWorker, path: string): Promise<Response> {
  return fetch(new URL(path, w.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
}

/**
 * A message of about `size` bytes whose body has every byte value (8-bit, NUL, bare CR and
 * LF, dots after line ends), ending in CRLF (else LMTP framing adds one: dot-stream.ts).
 */
function message(tag: string, size: number): Buffer {
  const head = Buffer.from(`Message-ID: <${tag}@example.net>\r\nSubject: ${tag}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n`);
  const body = Buffer.alloc(Math.max(2, size - head.length));
  for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 11)) & 0xff;
  body.write('\r\n', body.length - 2, 'latin1');
  return Buffer.concat([head, body]);
}

const bucketKeys = (w: TestWorker): Promise<string[]> => w.bodyKeys();

/** Posts `raw` exactly (the test wrote its block), so it can compare every byte. */
async function postRaw(w: TestWorker, raw: Buffer): Promise<string> {
  const r = await w.post(FROM, TO, raw, { block: false });
  if (r.status !== 200) throw new Error(`post: ${r.status} ${JSON.stringify(r.body)}`);
  return String(r.body.id);
}

for (const size of [10 * 1024, 5 * 1024 * 1024 + 123]) {
  t.test(`${size} bytes with 8-bit content: stored in R2, exported and delivered byte-exact; the R2 object deleted after the ack`, async (t) => {
    const env = await setup(t);
    const raw = Buffer.concat([cloudflareBlock(FROM, TO), message(`r2-${size}`, size)]);
    const id = await postRaw(env.w, raw);
    const keys = await bucketKeys(env.w);
    t.equal(keys.length, 1, 'one object in R2');
    const b = await env.w.rt.mf.getR2Bucket('BODIES');
    const stored = await b.get(keys[0] ?? '');
    const prefix = cloudflareBlock(FROM, TO).length;
    const inR2 = Buffer.from(await stored!.arrayBuffer());
    t.ok(inR2.equals(raw.subarray(prefix)), 'R2 holds exactly the bytes after Cloudflare\'s block');

    const exp = await admin(env.w, `/admin/messages/${id}/raw`);
    t.equal(exp.status, 200);
    t.equal(exp.headers.get('X-Message-Md5'), createHash('md5').update(raw.subarray(prefix)).digest('hex'), 'the export names R2\'s MD5 of the body');
    t.equal(exp.headers.get('X-Message-Prefix'), String(prefix));
    t.ok(Buffer.from(await exp.arrayBuffer()).equals(raw), 'the admin export is the message, block included, byte for byte');
    const show = await (await admin(env.w, `/admin/messages/${id}`)).json() as { headers: { name: string; value: string }[] };
    t.ok(show.headers.some((h) => h.name === 'Subject' && h.value === `r2-${size}`), 'the admin view reads the header from the stored head');

    const a = env.agent();
    await a.connected;
    await poll('the delivery', () => env.peer.stored.length, (n) => n >= 1, 30_000);
    const got = env.peer.stored[0] ?? Buffer.alloc(0);
    if (!got.subarray(got.length - raw.length).equals(raw)) {
      const tail = got.subarray(got.length - raw.length);
      let i = 0;
      while (i < raw.length && tail[i] === raw[i]) i++;
      t.comment(`got ${got.length} bytes for ${raw.length}; first difference at ${i}: ${JSON.stringify(tail.subarray(i - 5, i + 10).toString('latin1'))} vs ${JSON.stringify(raw.subarray(i - 5, i + 10).toString('latin1'))}`);
    }
    t.ok(got.subarray(got.length - raw.length).equals(raw), 'LMTP got the message byte for byte (after the agent\'s Authentication-Results)');
    t.match(got.subarray(0, got.length - raw.length).toString('latin1'), /^Authentication-Results: [^]*\r\n$/, 'and nothing else before it');
    await poll('the R2 object to be deleted', () => bucketKeys(env.w), (k) => k.length === 0, 30_000);
    t.same(await env.w.summary(), { incoming: 0, queued: 0, 'in-flight': 0, deferred: 0, hold: 0, 'dead-letter': 0, bouncing: 0, bounced: 0 }, 'acked: gone from the queue');
    t.equal(env.peer.stored.length, 1, 'delivered once');
  });
}

t.test('the same message under two different Cloudflare blocks is stored once (dedupe on R2\'s MD5 of the bytes after the block)', async (t) => {
  const env = await setup(t);
  const body = message('dedupe', 20_000);
  const blockA = cloudflareBlock(FROM, TO);
  const blockB = cloudflareBlock(FROM, TO, { clientHost: 'other.example.net', clientIp: '192.0.2.7' });
  t.not(blockA.toString(), blockB.toString(), 'the blocks differ');
  const first = await env.w.post(FROM, TO, Buffer.concat([blockA, body]), { block: false });
  const second = await env.w.post(FROM, TO, Buffer.concat([blockB, body]), { block: false });
  t.match(first.body, { outcome: 'accepted', duplicate: false });
  t.match(second.body, { outcome: 'accepted', duplicate: true, id: first.body.id }, 'the retry is the first message');
  t.equal((await env.w.summary()).queued, 1, 'one message queued');
  await poll('the duplicate\'s R2 object to be deleted', () => bucketKeys(env.w), (k) => k.length === 1, 30_000);
  const other = await env.w.post(FROM, TO, Buffer.concat([blockA, message('dedupe-2', 20_000)]), { block: false });
  t.match(other.body, { duplicate: false }, 'a different body is a different message');
});

t.test('a body damaged in R2 is refused by the agent (nack corrupt) and never delivered', async (t) => {
  const env = await setup(t);
  const raw = Buffer.concat([cloudflareBlock(FROM, TO), message('corrupt', 300_000)]);
  const id = await postRaw(env.w, raw);
  const [key] = await bucketKeys(env.w);
  const b = await env.w.rt.mf.getR2Bucket('BODIES');
  const damaged = Buffer.from(raw.subarray(cloudflareBlock(FROM, TO).length));
  damaged[damaged.length - 10] = (damaged[damaged.length - 10] ?? 0) ^ 0x01;  // one bit, near the end: most of the body streams before the check
  await b.put(key ?? '', damaged.buffer.slice(damaged.byteOffset, damaged.byteOffset + damaged.byteLength));
  env.agent();
  const corrupt = await poll('the agent\'s refusal', () => env.events.filter((e) => e.event === 'deliver.corrupt'), (e) => e.length >= 1, 30_000);
  t.match(String(corrupt[0]?.error), /MD5 mismatch/, 'the agent names the MD5 mismatch');
  const msg = await poll('the message to be deferred', async () => (await admin(env.w, `/admin/messages/${id}`)).json() as Promise<Record<string, unknown>>, (m) => m.state === 'deferred', 30_000);
  t.match(msg.lastError, /nack corrupt: .*MD5 mismatch/, 'deferred with the reason');
  t.same(env.peer.stored, [], 'nothing stored by LMTP: the final dot never went out');
  t.ok(env.peer.dataBytes > 0, 'although the body was streaming into the LMTP DATA');
  t.same(await bucketKeys(env.w), [key], 'the body stays in R2 for the retry (the message is not lost)');
});

t.test('relayctl export of a message whose body is in R2: byte for byte, checked against R2\'s MD5', async (t) => {
  const env = await setup(t);
  const raw = Buffer.concat([cloudflareBlock(FROM, TO), message('export', 70_000)]);
  const id = await postRaw(env.w, raw);
  const out: Buffer[] = [];
  let err = '';
  const code = await main(['export', id], {
    env: { RELAYCTL_URL: env.w.rt.url.href, RELAYCTL_TOKEN: ADMIN },
    stdout: new Writable({ write(c: Buffer, _e, cb) { out.push(Buffer.from(c)); cb(); } }),
    stderr: new Writable({ write(c: Buffer, _e, cb) { err += c.toString('utf8'); cb(); } }),
  });
  t.equal(code, 0, err);
  t.ok(Buffer.concat(out).equals(raw), 'the exported bytes are the message');
});

t.test('the body route: an agent token and a leased message only', async (t) => {
  const env = await setup(t);
  const id = await postRaw(env.w, Buffer.concat([cloudflareBlock(FROM, TO), message('route', 1000)]));
  const url = new URL(`/agent/body/${id}`, env.w.rt.url);
  t.equal((await fetch(url)).status, 401, 'no token: 401');
  const queued = await fetch(url, { headers: { Authorization: `Bearer ${AGENT_TOKEN}` } });
  t.equal(queued.status, 404, 'a queued message (not leased) is not served');
  await queued.arrayBuffer();
  const bad = await fetch(new URL('/agent/body/nope', env.w.rt.url), { headers: { Authorization: `Bearer ${AGENT_TOKEN}` } });
  t.equal(bad.status, 404, 'not a message id: 404');
  await bad.arrayBuffer();
});

t.test('a refused message in R2 bounces with its original header section; the purge deletes its body', async (t) => {
  const env = await setup(t);
  const relay = await startSmtpSink();
  t.teardown(() => relay.close());
  env.peer.finalReply = (r) => `550 5.1.1 <${r}> User doesn't exist\r\n`;
  const raw = Buffer.concat([cloudflareBlock(FROM, TO), message('bounce-me', 40_000)]);
  const id = await postRaw(env.w, raw);
  env.agent(relay.url);
  const [dsn] = await poll('the DSN', () => relay.messages, (m) => m.length >= 1, 30_000);
  t.same(dsn?.to, [FROM], 'to the sender');
  const text = dsn?.body.toString('latin1') ?? '';
  t.match(text, /Content-Type: text\/rfc822-headers/, 'with the original headers');
  t.match(text, /Message-ID: <bounce-me@example\.net>\r\nSubject: bounce-me\r\n/, 'quoted from the stored header section');
  t.ok(text.length < 20_000, 'and not the 40 kB body');
  await poll('bounced', async () => (await admin(env.w, `/admin/messages/${id}`)).json() as Promise<Record<string, unknown>>, (m) => m.state === 'bounced', 30_000);
  t.same(await bucketKeys(env.w), [`queue/${id}`], 'a bounced message keeps its body (relayctl export) until purged or expired');
  const purge = await fetch(new URL(`/admin/messages/${id}`, env.w.rt.url), { method: 'DELETE', headers: { Authorization: `Bearer ${ADMIN}` } });
  t.equal(purge.status, 200);
  t.same(await bucketKeys(env.w), [], 'purged: its R2 object too');
});

t.test('postsuper -d (delete) and the retention of bounced messages delete the R2 object too', async (t) => {
  const env = await setup(t, { RETENTION_MS: '1000', AGENT_SILENT_MS: '2000' });
  const held = await postRaw(env.w, Buffer.concat([cloudflareBlock(FROM, TO), message('delete-me', 5000)]));
  const del = await fetch(new URL(`/admin/messages/${held}/delete`, env.w.rt.url), { method: 'POST', headers: { Authorization: `Bearer ${ADMIN}` } });
  t.equal(del.status, 200);
  t.same(await bucketKeys(env.w), [], 'deleted: its R2 object too');

  const relay = await startSmtpSink();
  t.teardown(() => relay.close());
  env.peer.finalReply = (r) => `550 5.1.1 <${r}> User doesn't exist\r\n`;
  const id = await postRaw(env.w, Buffer.concat([cloudflareBlock(FROM, TO), message('expire-me', 5000)]));
  env.agent(relay.url);
  await poll('the DSN', () => relay.messages, (m) => m.length >= 1, 30_000);
  // Kept RETENTION_MS after its DSN, then pruned by the alarm (while an agent is connected, it
  // runs every AGENT_SILENT_MS / 2): the row and, with it, the body in R2.
  await poll('pruned', async () => (await admin(env.w, `/admin/messages/${id}`)).status, (s) => s === 404, 15_000);
  await poll('its R2 object deleted', () => bucketKeys(env.w), (k) => k.length === 0, 30_000);
  t.pass('pruned with its body');
});
