// Delay warnings (DELAY_WARNING_MS, Postfix's delay_warning_time) against the real object and
// the real agent: a target that keeps answering 451, a bounce relay that is an SMTP sink. Guards
// against a second warning, a warning that disturbs the message's own retries, a warning when
// the setting is off or to the null sender, and a later bounce swallowed by the warning.
import t, { type Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { startAgent } from '../../edge-agent/agent.ts';
import { validateConfig } from '../../edge-agent/agent-config.ts';
import { rfc5322Date } from '../../edge-agent/bounce/dsn.ts';
import { startLmtpPeer } from '../edge-agent/lmtp-peer.ts';
import { startSmtpSink } from '../helpers/smtp-sink.ts';
import { poll, until } from '../helpers/wait.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';

// The peer does not offer ENHANCEDSTATUSCODES, so the client keeps no x.y.z: the DSN's Status is derived, 4.0.0.
const TEMPFAIL = (r: string): string => `451 <${r}> mailbox busy\r\n`;
const SAVED = (r: string): string => `250 2.0.0 <${r}> Saved\r\n`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Worker with these vars, an agent with a bounce relay, a target answering 451 to every recipient. */
async function setup(t: Test, vars: Record<string, string>) {
  const w = await startTestWorker({ vars: { RETRY_FIRST_MS: '300', RETRY_MAX_MS: '600', ...vars }, verdictWaitMs: 0 });
  t.teardown(() => w.stop());
  const peer = await startLmtpPeer();
  t.teardown(() => peer.close());
  peer.finalReply = TEMPFAIL;
  const sink = await startSmtpSink();
  t.teardown(() => sink.close());
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-warn-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const agent = startAgent(
    validateConfig({
      workerUrl: w.agentUrl(), token: AGENT_TOKEN, target: peer.url, name: 'warn-agent', heartbeatMs: 1000,
      bounceRelay: sink.url, reportingMta: 'home.example.test',
    }),
    join(dir, 'state'), () => {},
  );
  t.teardown(() => agent.stop(1000));
  await until('the agent is connected', () => w.logs.some((l) => l.includes('"agent.hello"')));
  const events = (name: string): string[] => w.logs.filter((l) => l.includes(`"event":"${name}"`));
  return { w, peer, sink, events };
}

const body = (subject: string): Buffer => Buffer.from(`From: s@example.net\r\nTo: alice@example.test\r\nSubject: ${subject}\r\n\r\nhello\r\n`);

t.test('one delay DSN (Action: delayed) once; the message stays deferred, is retried, and is delivered when the target is back', async (t) => {
  const MAX_AGE = 60_000;
  const { w, peer, sink, events } = await setup(t, { DELAY_WARNING_MS: '500', MAX_AGE_MS: String(MAX_AGE) });
  const posted = await w.post('s@example.net', 'alice@example.test', body('slow'));
  const id = String(posted.body.id);
  await until('the warning reached the relay', () => sink.messages.length === 1, 5000);
  const attemptsAtWarning = peer.stored.length;
  // Keep failing a while: retries go on, no second warning.
  await until('retried after the warning', () => peer.stored.length >= attemptsAtWarning + 3, 5000);
  await sleep(300);
  t.equal(sink.messages.length, 1, 'one warning, however many retries');
  const s = await w.summary();
  t.equal((s.bounced ?? 0) + (s.bouncing ?? 0) + (s['dead-letter'] ?? 0), 0, 'the message is still live, not failed');

  const m = sink.messages[0];
  t.equal(m?.from, '', 'MAIL FROM:<>');
  t.same(m?.to, ['s@example.net']);
  const dsn = await simpleParser(m?.body ?? Buffer.alloc(0));
  t.equal(dsn.subject, 'Delayed Mail (still being retried)');
  const text = (dsn.text ?? '').replace(/\s+/g, ' ');  // unfolded
  t.match(text, /THIS IS A WARNING ONLY/);
  t.match(text, new RegExp(`X-Mailbridge-Queue-ID: ${id}`));
  t.match(text, /Final-Recipient: rfc822; alice@example\.test\s+Action: delayed Status: 4\.0\.0 Diagnostic-Code: smtp; 451 <alice@example\.test> mailbox busy/);
  const arrival = Date.parse(/Arrival-Date: (.+?\+0000)/.exec(text)?.[1] ?? '');
  t.match(text, new RegExp(`Will-Retry-Until: ${rfc5322Date(arrival + MAX_AGE).replace(/\+/g, '\\+')}`), 'arrival + MAX_AGE_MS');
  t.ok(dsn.attachments[0]?.content.toString().includes('Subject: slow'), 'the original header section');

  peer.finalReply = SAVED;
  await poll('delivered once the target is back', () => w.summary(), (s) => Object.values(s).every((n) => n === 0), 5000);
  t.match(events('message.acked'), [new RegExp(id)]);
  t.equal(events('warning.sent').length, 1);
  t.equal(sink.messages.length, 1, 'still one warning, and no bounce');
});

t.test('no warning when DELAY_WARNING_MS is unset', async (t) => {
  const { w, peer, sink, events } = await setup(t, {});
  await w.post('s@example.net', 'alice@example.test', body('no warning'));
  await until('retried a few times', () => peer.stored.length >= 4, 5000);
  t.equal(sink.messages.length, 0);
  t.same(events('warning.leased'), []);
  peer.finalReply = SAVED;
  await poll('delivered', () => w.summary(), (s) => Object.values(s).every((n) => n === 0), 5000);
  t.equal(sink.messages.length, 0);
});

t.test('no warning to the null sender <>', async (t) => {
  const { w, peer, sink, events } = await setup(t, { DELAY_WARNING_MS: '300' });
  t.equal((await w.post('', 'alice@example.test', body('a bounce itself'))).status, 200);
  await until('retried well past the warning time', () => peer.stored.length >= 4, 5000);
  t.equal(sink.messages.length, 0, 'never warn about a bounce');
  t.same(events('warning.leased'), []);
});

t.test('a message that later expires gets its warning and its bounce, each once', async (t) => {
  const { w, sink, events } = await setup(t, { DELAY_WARNING_MS: '500', MAX_AGE_MS: '2500' });
  const id = String((await w.post('s@example.net', 'alice@example.test', body('doomed'))).body.id);
  await poll('bounced', () => w.summary(), (s) => s.bounced === 1, 8000);
  await sleep(500);
  t.equal(sink.messages.length, 2, 'one warning, one bounce');
  const [warning, bounce] = await Promise.all(sink.messages.map((m) => simpleParser(m.body)));
  t.equal(warning?.subject, 'Delayed Mail (still being retried)');
  t.match(warning?.text, /Action: delayed/);
  t.equal(bounce?.subject, 'Undelivered Mail Returned to Sender');
  t.match(bounce?.text?.replace(/\s+/g, ' '), /Action: failed Status: 4\.4\.7/);
  t.match(events('warning.sent'), [new RegExp(id)]);
  t.match(events('bounce.sent'), [new RegExp(`"reason":"expired"`)]);
});
