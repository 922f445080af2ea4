// Issue #22's acceptance, with a real Dovecot and the relay as npm start runs it: a message
// Dovecot refused (550, no bounce relay) goes to dead-letter; once the mailbox exists,
// `relayctl dead-letter replay` delivers it exactly once while other mail keeps flowing, on the
// same agent session. And an identical resend after a bounce is a new message, delivered.
import t, { type Test } from 'tap';
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { silentLogger } from '../../edge-agent/ops/log.ts';
import { startLocalRelay, type LocalRelay } from '../../local/relay.ts';
import { main } from '../../relayctl/cli.ts';
import { startDovecot, type DovecotFixture } from '../../bench/lib/dovecot.ts';
import { dovecotSkip } from '../helpers/skip.ts';
import { message, sendSmtp, splitTrace, waitFor } from '../helpers/mail.ts';
import { startSmtpSink } from '../helpers/smtp-sink.ts';

const skip = dovecotSkip();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function setup(t: Test, agent: { bounceRelay?: string } = {}): Promise<{ dovecot: DovecotFixture; relay: LocalRelay }> {
  const dovecot = await startDovecot({ users: ['alice', 'bob'] });
  t.teardown(() => dovecot.stop());
  const dataDir = await mkdtemp(join(tmpdir(), 'mailbridge-e2e-replay-'));
  // No verdict wait: the sender hears 250 once the message is queued, so Dovecot's 550 comes after.
  const relay = await startLocalRelay({
    dataDir, smtpPort: 0, target: `lmtp://127.0.0.1:${dovecot.lmtpPort}`, vars: { VERDICT_WAIT_MS: '0' }, agent, log: silentLogger,
  });
  t.teardown(async () => {
    await relay.stop();
    await rm(dataDir, { recursive: true, force: true });
  });
  return { dovecot, relay };
}

/** Adds a deliverable user to the fixture's passwd-file: Dovecot reads it again on its next lookup. */
async function addUser(dovecot: DovecotFixture, address: string): Promise<void> {
  // maildirOf: <dir>/home/<domain>/<local>/Maildir; the passwd-file is <dir>/passwd.
  const dir = dirname(dirname(dirname(dirname(dovecot.maildirOf('alice')))));
  await appendFile(join(dir, 'passwd'), `${address}:{PLAIN}fixture::::::\n`);
  // Dovecot looks at a passwd-file again at most once a second (db-passwd-file's sync is
  // skipped within the second of the last one): a lookup sooner could still miss the user.
  await sleep(1100);
}

async function relayctl(relay: LocalRelay, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const sink = (f: (s: string) => void) => new Writable({ write(c: Buffer, _e, cb) { f(c.toString()); cb(); } });
  const code = await main(args, {
    stdout: sink((s) => { out += s; }), stderr: sink((s) => { err += s; }),
    env: { RELAYCTL_URL: relay.workerUrl.href, RELAYCTL_TOKEN: relay.adminToken }, cwd: '/',
  });
  return { code, out, err };
}

async function states(relay: LocalRelay): Promise<Record<string, number>> {
  const r = await relayctl(relay, '--json', 'status');
  return (JSON.parse(r.out) as { states: Record<string, number> }).states;
}

async function until(what: string, check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  for (const end = Date.now() + ms; !(await check());) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(100);
  }
}

const body = (tag: string) => message({ From: 's@example.net', Subject: tag }, Buffer.from(`${tag}: the same bytes each time\r\n`));
const rest = (stored: Buffer | undefined): Buffer | undefined => {
  const at = stored?.indexOf('Received: from cloudflare-email-routing by ') ?? -1;
  return at < 0 ? undefined : splitTrace(stored?.subarray(at) ?? Buffer.alloc(0))?.rest;
};

t.test('a 550 for dave goes to dead-letter; after his mailbox exists, replay delivers it once, mail flowing meanwhile', { skip }, async (t) => {
  const { dovecot, relay } = await setup(t);
  const raw = body('for alice and dave');
  const [sent] = await sendSmtp(relay.smtpPort, 's@example.net', ['alice@example.test', 'dave@example.test'], raw);
  t.equal(sent?.code, 250, 'accepted into the queue');
  await until('dead-letter', async () => (await states(relay))['dead-letter'] === 1);
  const [dead] = JSON.parse((await relayctl(relay, '--json', 'dead-letter', 'list')).out).messages as { id: string; failure: string; results: { recipient: string; outcome: string }[] }[];
  // The local ingress queues one message per recipient: alice's went through, dave's is here.
  t.match(dead, { failure: 'refused', recipients: [], results: [{ recipient: 'dave@example.test', code: 550, outcome: 'permfail' }] });
  t.equal((await dovecot.readMessages('alice')).length, 1, 'alice has hers');
  const sessions = relay.agent.stats.sessions;

  await addUser(dovecot, 'dave@example.test');
  const flowing = sendSmtp(relay.smtpPort, 's@example.net', ['bob@example.test'], body('bob 1'));
  const replay = await relayctl(relay, 'dead-letter', 'replay', dead?.id ?? '');
  t.equal(replay.code, 0, replay.err);
  t.equal((await flowing)[0]?.code, 250);
  await sendSmtp(relay.smtpPort, 's@example.net', ['bob@example.test'], body('bob 2'));

  const [stored] = await waitFor('dave\'s copy', () => dovecot.readMessages('dave'), 1);
  t.ok(rest(stored)?.equals(raw), 'byte-exact');
  await waitFor('bob\'s two', () => dovecot.readMessages('bob'), 2);
  await until('queue settled', async () => Object.values(await states(relay)).every((n) => n === 0));
  await sleep(500);
  t.equal((await dovecot.readMessages('dave')).length, 1, 'dave: exactly once');
  t.equal((await dovecot.readMessages('alice')).length, 1, 'alice: not again');
  t.equal((await dovecot.readMessages('bob')).length, 2, 'other mail kept flowing');
  t.equal(relay.agent.stats.sessions, sessions, 'no reconnect in between');
});

t.test('an identical resend after a bounce is delivered', { skip }, async (t) => {
  const sink = await startSmtpSink();
  t.teardown(() => sink.close());
  const { dovecot, relay } = await setup(t, { bounceRelay: sink.url });
  const raw = body('for dave, twice');
  t.equal((await sendSmtp(relay.smtpPort, 's@example.net', ['dave@example.test'], raw))[0]?.code, 250);
  await until('bounced', async () => (await states(relay)).bounced === 1);
  t.equal(sink.messages.length, 1, 'the sender got the bounce');

  await addUser(dovecot, 'dave@example.test');
  const [again] = await sendSmtp(relay.smtpPort, 's@example.net', ['dave@example.test'], raw);
  t.equal(again?.code, 250);
  const [stored] = await waitFor('dave\'s copy', () => dovecot.readMessages('dave'), 1);
  t.ok(rest(stored)?.equals(raw), 'the resend, byte-exact');
  await sleep(500);
  t.equal((await dovecot.readMessages('dave')).length, 1, 'once');
  t.equal(sink.messages.length, 1, 'no second bounce');
});
