// Issue #13 end to end: real workerd object, the real agent, real Dovecot, a real SMTP
// server as the bounce relay. Every accepted message ends in a mailbox, in exactly one
// bounce to its sender, or in dead-letter; an unknown recipient on the published list is
// refused at SMTP time even while home is unreachable.
import t, { type Test } from 'tap';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { startAgent, type Agent, type AgentOptions } from '../../edge-agent/agent.ts';
import { validateConfig, type AgentConfig } from '../../edge-agent/agent-config.ts';
import { startDovecot, type DovecotFixture } from '../../bench/lib/dovecot.ts';
import { dovecotSkip } from '../helpers/skip.ts';
import { startSmtpSink, type SmtpSink } from '../helpers/smtp-sink.ts';
import { poll } from '../helpers/wait.ts';
import { AGENT_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const skip = dovecotSkip();
const ADMIN = 'admin-token-0123456789abcdef';

interface Env { w: TestWorker; dovecot: DovecotFixture; sink: SmtpSink; dir: string; agent(cfg?: Partial<AgentConfig>, opts?: AgentOptions): Agent }

async function setup(t: Test, vars: Record<string, string>): Promise<Env> {
  const dovecot = await startDovecot();
  t.teardown(() => dovecot.stop());
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { ADMIN_TOKEN: ADMIN, ...vars } });
  t.teardown(() => w.stop());
  const sink = await startSmtpSink();
  t.teardown(() => sink.close());
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-loss-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const agents: Agent[] = [];
  t.teardown(async () => { for (const a of agents) await a.stop(1000); });
  return {
    w, dovecot, sink, dir,
    agent(cfg = {}, opts = {}) {
      const config = validateConfig({
        workerUrl: w.agentUrl(), token: AGENT_TOKEN, target: `lmtp://127.0.0.1:${dovecot.lmtpPort}`, name: 'home',
        heartbeatMs: 1000, maxReconnectMs: 1000, bounceRelay: sink.url, reportingMta: 'home.example.test', ...cfg,
      });
      const a = startAgent(config, join(dir, 'state'), () => {}, { probeEveryMs: 300, targetFreshMs: 1000, ...opts });
      agents.push(a);
      return a;
    },
  };
}

async function admin(w: TestWorker, path: string): Promise<Record<string, unknown>> {
  const res = await fetch(new URL(path, w.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
  return (await res.json()) as Record<string, unknown>;
}


/** Real Dovecot and workerd: a longer bound than the helpers' default. */
const eventually = <T>(what: string, read: () => Promise<T> | T, ok: (v: T) => boolean, ms = 30_000): Promise<T> => poll(what, read, ok, ms);

const ACTIVE = ['incoming', 'queued', 'in-flight', 'deferred', 'bouncing'];

/**
 * A user's stored copies once the relay is quiet: nothing left to do in the queue and the
 * count unchanged for a second. Counted at the first copy, a later duplicate would pass.
 */
async function storedWhenQuiet(env: Env, user: string): Promise<Buffer[]> {
  await eventually('the queue to settle', async () => (await admin(env.w, '/admin/queue')).states as Record<string, number>,
    (states) => ACTIVE.every((s) => (states[s] ?? 0) === 0));
  let before = await env.dovecot.readMessages(user);
  for (;;) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = await env.dovecot.readMessages(user);
    if (now.length === before.length) return now;
    before = now;
  }
}

const mail = (tag: string): Buffer => Buffer.from(`Message-ID: <${tag}@example.net>\r\nSubject: ${tag}\r\n\r\nbody of ${tag}\r\n`);

t.test('a published 10,000-line list: unknown users get 550 5.1.1 at once while home is down; known ones wait and arrive once', { skip }, async (t) => {
  const env = await setup(t, {});
  const file = join(env.dir, 'recipients');
  const lines = ['# from doveadm user \'*\'', 'alice@example.test', 'Bob@Example.test', '@lists.example.test'];
  for (let i = 0; i < 9_997; i++) lines.push(`user${i}@example.test`);
  await writeFile(file, lines.join('\n') + '\n');
  const first = env.agent({ recipientsFile: file, recipientDelimiter: '+' });
  await first.connected;
  await eventually('the list to be published', () => env.w.logs.some((l) => l.includes('"event":"recipients.published"') && l.includes('"entries":10000')), (v) => v);

  // Home unreachable: the agent stopped (the object restarts nothing; the list is durable).
  await first.stop(1000);
  const unknown = await env.w.post('s@example.net', 'nobody@example.test', mail('unknown-1'));
  t.equal(unknown.status, 550, 'an unknown user is refused while no agent is connected');
  t.match(unknown.body.reason, /^5\.1\.1 <nobody@example\.test>: Recipient address rejected/);
  t.equal((await env.w.post('s@example.net', 'user9996@example.test', mail('known-last'))).status, 200, 'the last line of the file is known');
  t.equal((await env.w.post('s@example.net', 'alice+news@example.test', mail('ext'))).status, 200, '+ext of a known user is known');
  t.equal((await env.w.post('s@example.net', 'anyone@lists.example.test', mail('catchall'))).status, 200, '@domain covers the domain');
  const known = await env.w.post('s@example.net', 'bob@example.test', mail('known-1'));
  t.equal(known.status, 200, 'a known user is accepted (case-insensitive) and waits');

  // Dovecot down too when the agent comes back (its socket moved away: connects fail as with
  // Dovecot stopped): the known one is tried and deferred, then arrives once Dovecot is back.
  const socket = env.dovecot.lmtpSocket;
  await rename(socket, `${socket}.off`);
  const second = env.agent({ recipientsFile: file, recipientDelimiter: '+', target: `lmtp+unix:${socket}` });
  await second.connected;
  await eventually('bob\'s message deferred while Dovecot is down', () => admin(env.w, `/admin/messages/${String(known.body.id)}`), (m) => m.state === 'deferred');
  t.same(await env.dovecot.readMessages('bob'), [], 'nothing stored while Dovecot was down');
  await rename(`${socket}.off`, socket);
  await eventually('bob\'s message in Dovecot', () => env.dovecot.readMessages('bob'), (m) => m.length >= 1);
  const stored = await storedWhenQuiet(env, 'bob');
  t.equal(stored.length, 1, 'delivered once');
  t.ok(stored[0]?.includes(mail('known-1')), 'the message itself');
  t.equal((await env.w.post('s@example.net', 'nobody@example.test', mail('unknown-2'))).status, 550, 'still refused with the agent connected');
});

t.test('late 550: exactly one DSN to the sender, none for <> (that one goes to dead-letter)', { skip }, async (t) => {
  const env = await setup(t, {});
  const a = env.agent();
  await a.connected;
  // VERDICT_WAIT_MS=0: the sender hears 250 before Dovecot answers, so only a bounce can tell it.
  const late = await env.w.post('s@example.net', 'nobody@example.test', mail('late-550'));
  t.equal(late.status, 200, 'accepted: nobody could know yet');
  const fromNull = await env.w.post('', 'nobody@example.test', mail('null-sender'));
  t.equal(fromNull.status, 200);
  const lateId = String(late.body.id);
  const nullId = String(fromNull.body.id);
  const bounced = await eventually('the bounce', () => admin(env.w, `/admin/messages/${lateId}`), (m) => m.state === 'bounced');
  t.match(bounced, { failure: 'refused', bounceStatus: /^sent: 250/ }, 'bounced, with the relay\'s answer');
  const dead = await eventually('dead-letter', () => admin(env.w, `/admin/messages/${nullId}`), (m) => m.state === 'dead-letter');
  t.match(dead, { failure: 'refused', bounceStatus: /null sender/ }, 'no bounce to <>: the operator sees it');
  await new Promise((r) => setTimeout(r, 1000));
  t.equal(env.sink.messages.length, 1, 'exactly one DSN');
  const dsn = env.sink.messages[0];
  t.equal(dsn?.from, '', 'sent from <>');
  t.same(dsn?.to, ['s@example.net'], 'to the envelope sender');
  const parsed = await simpleParser(dsn?.body ?? Buffer.alloc(0));
  t.match(parsed.headers.get('content-type'), { value: 'multipart/report', params: { 'report-type': 'delivery-status' } });
  t.equal(parsed.headers.get('auto-submitted'), 'auto-replied');
  const text = dsn?.body.toString('latin1') ?? '';
  t.match(text, /Final-Recipient: rfc822; nobody@example\.test\r\nAction: failed\r\nStatus: 5\.1\.1\r\n/, 'the delivery-status part');
  t.match(text, /Diagnostic-Code: smtp; 550 /, 'Dovecot\'s reply');
  t.match(text, /Content-Type: text\/rfc822-headers\r\n[\s\S]*Message-ID: <late-550@example\.net>/, 'the original headers');
  t.same(await env.dovecot.readMessages('alice'), [], 'nothing stored anywhere');
});

t.test('expiry: a message the target never took is bounced once at the age limit', { skip }, async (t) => {
  const env = await setup(t, { RETRY_FIRST_MS: '300', RETRY_MAX_MS: '600', MAX_AGE_MS: '2500' });
  await env.dovecot.stop();
  const a = env.agent();
  await a.connected;
  const r = await env.w.post('s@example.net', 'alice@example.test', mail('expires'));
  t.equal(r.status, 200);
  const id = String(r.body.id);
  const m = await eventually('the bounce', () => admin(env.w, `/admin/messages/${id}`), (x) => x.state === 'bounced');
  t.match(m, { failure: 'expired' });
  await new Promise((res) => setTimeout(res, 1000));
  t.equal(env.sink.messages.length, 1, 'one DSN');
  t.match(env.sink.messages[0]?.body.toString('latin1'), /Status: 4\.4\.7/, 'delivery time expired (RFC 3463)');
});

t.test('Dovecot down: a deferred message goes out within seconds of Dovecot answering again, not at the next scheduled retry', { skip }, async (t) => {
  const env = await setup(t, {});  // first retry after 5 minutes, as in production
  const socket = env.dovecot.lmtpSocket;
  // The socket file moved away: connects fail as with Dovecot stopped, and come back unchanged.
  await rename(socket, `${socket}.off`);
  const a = env.agent({ target: `lmtp+unix:${socket}` });
  await a.connected;
  const r = await env.w.post('s@example.net', 'alice@example.test', mail('waits'));
  const id = String(r.body.id);
  await eventually('the message to be deferred', () => admin(env.w, `/admin/messages/${id}`), (m) => m.state === 'deferred');
  const back = Date.now();
  await rename(`${socket}.off`, socket);
  await eventually('alice\'s message in Dovecot', () => env.dovecot.readMessages('alice'), (m) => m.length >= 1, 20_000);
  t.ok(Date.now() - back < 20_000, `delivered ${Date.now() - back} ms after Dovecot came back (the scheduled retry was 5 min away)`);
  t.equal((await storedWhenQuiet(env, 'alice')).length, 1, 'once, counted once the relay is quiet');
  t.ok(env.w.logs.some((l) => l.includes('"event":"deferred.retry"')), 'the agent asked the object to retry its deferred mail');
});
