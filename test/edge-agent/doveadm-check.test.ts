// Issue #23: exactly once into Dovecot even when its reply is lost. Real Dovecot with the
// doveadm HTTP API on; between the agent and its LMTP a proxy that loses one final reply
// (reply-cut.ts), so Dovecot has stored the message and the agent cannot know. With the
// doveadm check on, the next attempt asks Dovecot first and delivers no second copy; without
// it (the control), the copy is doubled, as every relay doubles it. The API is reached through
// a gate that counts its requests: the normal path makes none.
import t, { type Test } from 'tap';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startAgent } from '../../edge-agent/agent.ts';
import { validateConfig } from '../../edge-agent/agent-config.ts';
import { Deliverer, SETTLE_MS } from '../../edge-agent/delivery/deliver.ts';
import { TargetWatch } from '../../edge-agent/ops/health.ts';
import { InboundMessage } from '../../edge-agent/session/inbound.ts';
import { parseTarget } from '../../lmtp-proxy/target.ts';
import { Journal } from '../../edge-agent/delivery/journal.ts';
import { MAY_BE_DELIVERED } from '../../lmtp-proxy/client.ts';
import type { AckFrame } from '../../protocol/wire.ts';
import { startDovecot, type DovecotFixture, type DovecotOptions } from '../../bench/lib/dovecot.ts';
import { dovecotSkip } from '../helpers/skip.ts';
import { poll } from '../helpers/wait.ts';
import { runAgent, type LogEvent } from './agent-process.ts';
import { gate, lmtpCut } from './reply-cut.ts';
import { header, msgId, push, scriptedObject, TOKEN, type Conn } from './scripted-object.ts';

const skip = dovecotSkip();
const KEY = 'doveadm-check-key-0123';
const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const FILE_INTO = 'require ["fileinto", "mailbox"];\nif header :contains "subject" "[filed]" { fileinto :create "Filed"; }\n';

const copies = async (d: DovecotFixture, user: string): Promise<number> => (await d.readMessages(user)).length;
const mail = (n: number, subject = 'hello'): Buffer => Buffer.from(`From: s@example.net\r\nSubject: ${subject}\r\nMessage-ID: <m${n}@example.net>\r\n\r\nbody ${n}\r\n`, 'latin1');

async function setup(t: Test, o: { check?: boolean; dovecot?: DovecotOptions } = {}) {
  const dovecot = await startDovecot({ doveadmApiKey: KEY, ...o.dovecot });
  t.teardown(() => dovecot.stop());
  const cut = await lmtpCut(() => dovecot.lmtpPort);
  t.teardown(() => cut.close());
  const api = await gate(Number(new URL(dovecot.doveadmUrl ?? '').port));
  t.teardown(() => api.close());
  const object = await scriptedObject(t);
  const dir = t.testdir();
  const events: LogEvent[] = [];
  const check = o.check ?? true;
  const cfg = validateConfig({
    workerUrl: object.url, token: TOKEN, target: `lmtp://127.0.0.1:${cut.port}`, name: 'dell', heartbeatMs: 1000,
    ...(check ? { doveadmUrl: api.url, doveadmApiKey: KEY } : {}),
  });
  const connected = object.connection();
  const agent = startAgent(cfg, join(dir, 'state'), (event, fields = {}) => { events.push({ event, ...fields }); });
  t.teardown(() => agent.stop(1000));
  const c = await connected;
  // The one request at start (the key checked), before any message.
  if (check) await poll('doveadm.ready', () => events.some((e) => e.event === 'doveadm.ready'), (ok) => ok);
  const base = api.accepted;
  /** doveadm requests since the start. */
  const requests = (): number => api.accepted - base;
  /** Sends attempt `attempt` of message n and returns its ack. */
  const deliver = async (n: number, recipients: string[], attempt: number, body = mail(n)): Promise<AckFrame> => {
    push(c, header(msgId(n), body, recipients, attempt), body);
    return (await c.next('ack')) as AckFrame;
  };
  const copies = async (user: string, mailbox?: string): Promise<number> => (await dovecot.readMessages(user, mailbox)).length;
  const named = (e: string): LogEvent[] => events.filter((x) => x.event === e);
  return { dovecot, cut, api, requests, agent, deliver, copies, named, dir };
}

t.test('the reply lost right after the 250: the next attempt finds the copy, delivers none', { skip }, async (t) => {
  const { cut, requests, agent, deliver, copies, named } = await setup(t);
  cut.arm('cut');
  const first = await deliver(1, [ALICE], 1);
  t.match(first.results, [{ recipient: ALICE, outcome: 'tempfail', code: 0 }], 'no reply read: deferred');
  t.match(first.results[0]?.text, MAY_BE_DELIVERED);
  t.equal(await copies(ALICE), 1, 'yet Dovecot stored it');
  t.equal(requests(), 0, 'no question asked on the first attempt');

  const second = await deliver(1, [ALICE], 2);
  t.match(second.results, [{ recipient: ALICE, outcome: 'delivered', code: 250, text: /found in alice@example\.test's mailboxes after a lost reply/ }]);
  t.equal(await copies(ALICE), 1, 'exactly one copy');
  t.equal(requests(), 1, 'one question to Dovecot');
  t.match(named('deliver.found'), [{ id: msgId(1), attempt: 2, recipient: ALICE, user: ALICE }], 'a log line says it was found after a lost reply');
  t.equal(agent.stats.delivered, 0, 'no LMTP delivery counted for the found copy');

  // Its ack lost too: the third attempt is answered from the journal, without asking again.
  const third = await deliver(1, [ALICE], 3);
  t.same(third.results, second.results);
  t.equal(requests(), 1);
  t.equal(await copies(ALICE), 1);
});

t.test('control: without the doveadm settings the lost reply doubles the message (today\'s behaviour, documented)', { skip }, async (t) => {
  const { cut, requests, deliver, copies } = await setup(t, { check: false });
  cut.arm('cut');
  t.match((await deliver(2, [ALICE], 1)).results, [{ outcome: 'tempfail' }]);
  t.match((await deliver(2, [ALICE], 2)).results, [{ outcome: 'delivered', text: /Saved/ }]);
  t.equal(await copies(ALICE), 2, 'two copies: the window every relay has');
  t.equal(requests(), 0);
});

t.test('two recipients, the second one\'s reply lost: only that one is asked about, each stored once', { skip }, async (t) => {
  const { cut, requests, deliver, copies, named } = await setup(t);
  cut.arm('cut', 1);
  const first = await deliver(3, [ALICE, BOB], 1);
  t.match(first.results, [{ recipient: ALICE, outcome: 'delivered', code: 250 }, { recipient: BOB, outcome: 'tempfail', code: 0 }]);
  const second = await deliver(3, [ALICE, BOB], 2);
  t.match(second.results, [{ recipient: ALICE, outcome: 'delivered', text: /Saved/ }, { recipient: BOB, outcome: 'delivered', text: /found/ }]);
  t.same(named('deliver.found').map((e) => e.recipient), [BOB]);
  t.same(named('deliver.not-found'), []);
  t.equal(requests(), 1);
  t.equal(await copies(ALICE), 1);
  t.equal(await copies(BOB), 1);
});

t.test('filed by Sieve into another folder: found there', { skip }, async (t) => {
  const { cut, deliver, copies, named } = await setup(t, { dovecot: { sieve: FILE_INTO } });
  cut.arm('cut');
  const body = mail(4, 'a [filed] one');
  t.match((await deliver(4, [ALICE], 1, body)).results, [{ outcome: 'tempfail' }]);
  t.match((await deliver(4, [ALICE], 2, body)).results, [{ outcome: 'delivered', text: /found/ }]);
  t.equal(named('deliver.found').length, 1);
  t.equal(await copies(ALICE), 0, 'nothing in INBOX');
  t.equal(await copies(ALICE, 'Filed'), 1, 'one copy, in Filed');
});

t.test('users keyed by local part (auth_username_format = %Ln): found by the envelope address', { skip }, async (t) => {
  const { cut, deliver, copies, named } = await setup(t, { dovecot: { usernameFormat: '%Ln' } });
  cut.arm('cut');
  t.match((await deliver(13, [ALICE], 1)).results, [{ outcome: 'tempfail' }]);
  t.match((await deliver(13, [ALICE], 2)).results, [{ outcome: 'delivered', text: /found/ }]);
  t.match(named('deliver.found'), [{ recipient: ALICE, user: ALICE }], 'asked for the address; Dovecot mapped it to alice');
  t.equal(await copies(ALICE), 1);
});

t.test('not in Dovecot after all (the user deleted it meanwhile): asked again after a moment, then delivered', { skip }, async (t) => {
  const { dovecot, cut, requests, deliver, copies, named } = await setup(t);
  cut.arm('cut');
  t.match((await deliver(5, [ALICE], 1)).results, [{ outcome: 'tempfail' }]);
  const dir = join(dovecot.maildirOf(ALICE), 'new');
  for (const f of await readdir(dir)) await rm(join(dir, f));
  const started = Date.now();
  t.match((await deliver(5, [ALICE], 2)).results, [{ outcome: 'delivered', text: /Saved/ }]);
  t.ok(Date.now() - started >= SETTLE_MS - 500, 'not concluded while Dovecot might still be saving the first copy');
  t.equal(requests(), 2, 'asked twice');
  t.match(named('deliver.not-found'), [{ id: msgId(5), recipient: ALICE }]);
  t.equal(await copies(ALICE), 1);
});

t.test('a copy that shows only after the first search (Dovecot still saving it): found on the second', { skip }, async (t) => {
  const { dovecot, cut, requests, deliver, copies, named } = await setup(t);
  cut.arm('cut');
  t.match((await deliver(11, [ALICE], 1)).results, [{ outcome: 'tempfail' }]);
  const dir = join(dovecot.maildirOf(ALICE), 'new');
  const [name] = await readdir(dir);
  const saved = await readFile(join(dir, name ?? ''));
  await rm(join(dir, name ?? ''));
  // Dovecot logs each answered request: once one more is logged, the first search is over and found nothing.
  const answered = async (): Promise<number> => (await readFile(dovecot.logPath, 'utf8')).split('"POST /doveadm/v1 ').length - 1;
  const before = await answered();
  const second = deliver(11, [ALICE], 2);
  await poll('the first search answered', answered, (n) => n === before + 1);
  await writeFile(join(dir, `r${name ?? ''}`), saved);
  t.match((await second).results, [{ outcome: 'delivered', text: /found/ }]);
  t.equal(requests(), 2);
  t.same(named('deliver.not-found'), []);
  t.equal(await copies(ALICE), 1);
});

t.test('doveadm out of reach: deferred, never delivered blind; found once it answers', { skip }, async (t) => {
  const { cut, api, requests, deliver, copies, named } = await setup(t);
  cut.arm('cut');
  t.match((await deliver(6, [ALICE], 1)).results, [{ outcome: 'tempfail' }]);
  api.down = true;
  const second = await deliver(6, [ALICE], 2);
  t.match(second.results, [{ recipient: ALICE, outcome: 'tempfail', code: 0, text: /^doveadm: .*not delivered again until Dovecot says whether it stored that one/ }]);
  t.match(named('doveadm.failed'), [{ id: msgId(6), attempt: 2, recipients: [ALICE] }]);
  t.equal(await copies(ALICE), 1, 'not doubled');
  api.down = false;
  t.match((await deliver(6, [ALICE], 3)).results, [{ outcome: 'delivered', text: /found/ }]);
  t.equal(await copies(ALICE), 1);
});

t.test('outcomes known: no question to Dovecot, and no mark left in the journal', { skip }, async (t) => {
  const { requests, agent, deliver, copies, dir } = await setup(t, { dovecot: { quotaUser: 'carol', quotaTempfail: true } });
  t.match((await deliver(7, [ALICE, BOB], 1)).results, [{ outcome: 'delivered' }, { outcome: 'delivered' }]);
  t.match((await deliver(8, ['nobody@example.test', ALICE], 1)).results, [{ outcome: 'permfail', code: 550 }, { outcome: 'delivered' }]);
  // Over quota: 452 after the data, a temporary refusal Dovecot answered. The retry asks nothing.
  const big = mail(9, 'x'.repeat(2000));
  t.match((await deliver(9, ['carol@example.test'], 1, big)).results, [{ outcome: 'tempfail', code: 452 }]);
  t.match((await deliver(9, ['carol@example.test'], 2, big)).results, [{ outcome: 'tempfail', code: 452 }]);
  t.match((await deliver(7, [ALICE, BOB], 2)).results, [{ outcome: 'delivered' }, { outcome: 'delivered' }], 'a lost ack: from the journal');
  t.equal(requests(), 0, 'zero doveadm requests');
  t.equal(await copies(ALICE), 2);
  await agent.stop(1000);
  const j = new Journal(join(dir, 'state'));
  t.same([...j.unsettled(msgId(9), ['carol@example.test'])], [], 'the 452 cleared its mark');
  t.same([...j.unsettled(msgId(7), [ALICE, BOB])], [], 'a 250 clears its mark');
  j.close();
});

t.test('the agent killed -9 after the final dot, before any reply was journaled: the restarted agent finds the copy', { skip }, async (t) => {
  const dovecot = await startDovecot({ doveadmApiKey: KEY });
  t.teardown(() => dovecot.stop());
  const cut = await lmtpCut(() => dovecot.lmtpPort);
  t.teardown(() => cut.close());
  const object = await scriptedObject(t);
  const dir = t.testdir({ key: `${KEY}\n` });
  const env = {
    MAILBRIDGE_WORKER_URL: object.url, MAILBRIDGE_TOKEN: TOKEN, MAILBRIDGE_TARGET: `lmtp://127.0.0.1:${cut.port}`,
    MAILBRIDGE_STATE_DIR: join(dir, 'state'), MAILBRIDGE_NAME: 'dell', MAILBRIDGE_HTTP: 'off',
    MAILBRIDGE_DOVEADM_URL: dovecot.doveadmUrl ?? '', MAILBRIDGE_DOVEADM_API_KEY_FILE: join(dir, 'key'),
  };
  let connected = object.connection();
  const first = runAgent(env);
  t.teardown(() => { first.child.kill('SIGKILL'); });
  let c: Conn = await connected;
  t.match(await first.waitEvent('agent.started'), { doveadm: dovecot.doveadmUrl }, 'the start line says the check is on');
  t.match(await first.waitEvent('doveadm.ready'), { url: `${dovecot.doveadmUrl ?? ''}/doveadm/v1` }, 'and the key works');
  cut.arm('swallow');  // Dovecot's 250 never reaches the agent, which waits for it
  const body = mail(10);
  push(c, header(msgId(10), body, [ALICE], 1), body);
  await poll('the copy in Dovecot and its reply swallowed', async () => [await dovecot.readMessages(ALICE), cut.lost] as const, ([m, lost]) => m.length === 1 && lost === 1);
  first.child.kill('SIGKILL');
  t.equal(await first.exit, null, 'killed');
  t.same(c.log.filter((f) => f.type === 'ack'), [], 'no ack went out');

  connected = object.connection();
  const second = runAgent(env);
  t.teardown(() => { second.child.kill('SIGKILL'); });
  c = await connected;
  push(c, header(msgId(10), body, [ALICE], 2), body);
  t.match(await c.next('ack'), { id: msgId(10), results: [{ recipient: ALICE, outcome: 'delivered', code: 250, text: /found/ }] });
  t.match(await second.waitEvent('deliver.found'), { id: msgId(10), attempt: 2, recipient: ALICE });
  t.equal((await dovecot.readMessages(ALICE)).length, 1, 'exactly one copy');
  second.child.kill('SIGTERM');
  t.equal(await second.exit, 0);
});

t.test('the mark is on disk before the final dot: a journal slow to commit it holds the message back', { skip }, async (t) => {
  const dovecot = await startDovecot({ doveadmApiKey: KEY });
  t.teardown(() => dovecot.stop());
  let release: () => void = () => undefined;
  const held = new Promise<void>((r) => { release = r; });
  // A journal whose mark commits only when the test says so.
  class SlowJournal extends Journal {
    override mark(id: string, recipients: readonly string[], now?: number): Promise<void> {
      const committed = super.mark(id, recipients, now);
      return held.then(() => committed);
    }
  }
  const journal = new SlowJournal(t.testdir());
  t.teardown(() => journal.close());
  const cfg = validateConfig({
    workerUrl: 'ws://127.0.0.1:1/agent', token: TOKEN, target: `lmtp://127.0.0.1:${dovecot.lmtpPort}`, name: 'dell',
    doveadmUrl: dovecot.doveadmUrl ?? '', doveadmApiKey: KEY,
  });
  const stats = { delivered: 0, tempfail: 0, permfail: 0, fromJournal: 0 };
  const deliverer = new Deliverer({
    cfg, target: parseTarget(cfg.target), journal, watch: new TargetWatch(async () => undefined, { probeEveryMs: 60_000, freshMs: 60_000 }),
    log: () => undefined, stats, logSubject: false, now: Date.now,
  });
  t.teardown(() => deliverer.close());
  const body = mail(12);
  const msg = new InboundMessage(header(msgId(12), body, [ALICE]), () => undefined);
  msg.push(body);
  msg.end();
  const delivered = deliverer.deliver(msg);
  await new Promise((r) => setTimeout(r, 1000));
  t.equal(await copies(dovecot, ALICE), 0, 'the body went out, the final dot did not: Dovecot stored nothing yet');
  release();
  t.match((await delivered).results, [{ recipient: ALICE, outcome: 'delivered', code: 250 }]);
  t.equal(await copies(dovecot, ALICE), 1);
});
