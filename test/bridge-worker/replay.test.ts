// What a failed message owes, in real workerd: a replay gives back the recipients not yet
// delivered (never an empty lease), one result per recipient, exact durations in its texts;
// a waiting message expires from the alarm with no agent connected; a resend after a bounce
// or a dead-letter is a new message, not a duplicate (issue #22).
import t, { type Test } from 'tap';
import type { MessageFrame, RecipientResult } from '../../protocol/wire.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const ADMIN = 'admin-token-0123456789abcdef';
const AGE = 2000;

async function start(t: Test): Promise<TestWorker> {
  // No verdict wait: the sender heard 250, so a refusal owes a bounce or goes to dead-letter.
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { ADMIN_TOKEN: ADMIN, RETRY_FIRST_MS: String(AGE), RETRY_MAX_MS: String(AGE), MAX_AGE_MS: String(AGE) } });
  t.teardown(() => w.stop());
  return w;
}

async function admin(w: TestWorker, method: string, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(new URL(path, w.rt.url), { method, headers: { Authorization: `Bearer ${ADMIN}` } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function eventually(what: string, check: () => Promise<boolean>, ms = 8000): Promise<void> {
  for (const until = Date.now() + ms; !(await check());) {
    if (Date.now() > until) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(25);
  }
}
const show = async (w: TestWorker, id: string) => (await admin(w, 'GET', `/admin/messages/${id}`)).body;
const inState = (w: TestWorker, id: string, state: string) => eventually(`${id} ${state}`, async () => (await show(w, id)).state === state);

async function agent(w: TestWorker, bounces: boolean): Promise<RawAgent> {
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await a.hello({ agent: 'owed-test', window: 4, credit: 8 << 20, fetch: true, bounces });
  return a;
}

const attempt = (a: RawAgent, id: string, n: number) => a.until((seen) => {
  const f = seen.find((s) => s.kind === 'frame' && s.frame.type === 'message' && s.frame.id === id && s.frame.attempt === n);
  return f?.kind === 'frame' ? (f.frame as MessageFrame) : undefined;
});

const result = (recipient: string, code: number, enhanced: string, outcome: RecipientResult['outcome']): RecipientResult =>
  ({ recipient, code, enhanced, text: `${enhanced} said`, outcome });

t.test('replay after a 550: only the refused recipient is leased again, never an empty list; one result each', async (t) => {
  const w = await start(t);
  const a = await agent(w, false);
  t.teardown(() => a.close());
  const id = String((await w.post('s@sender.test', 'alice@example.test', Buffer.from('Subject: refused\r\n\r\nx\r\n'))).body.id);
  const m1 = await attempt(a, id, 1);
  t.same(m1.recipients, ['alice@example.test']);
  a.send({ type: 'ack', id, results: [result('alice@example.test', 550, '5.1.1', 'permfail')] });
  await inState(w, id, 'dead-letter');
  t.match(await show(w, id), { failure: 'refused', bounceStatus: /no bounce relay/ });

  const replayed = await admin(w, 'POST', `/admin/messages/${id}/replay`);
  t.match(replayed, { status: 200, body: { replayedFrom: id, state: 'queued' } });
  // A new id: the agent's journal would answer the old one with its old refusal.
  const as = String(replayed.body.id);
  t.not(as, id, 'queued under a new id');
  t.equal((await admin(w, 'GET', `/admin/messages/${id}`)).status, 404, 'the old id is gone');
  const m2 = await attempt(a, as, 2);
  t.same(m2.recipients, ['alice@example.test'], 'the refused recipient is owed again: not an empty lease');
  a.send({ type: 'ack', id: as, results: [result('alice@example.test', 550, '5.1.2', 'permfail')] });
  await inState(w, as, 'dead-letter');
  const results = (await show(w, as)).results as RecipientResult[];
  t.same(results.map((r) => [r.recipient, r.enhanced]), [['alice@example.test', '5.1.2']], 'one result, the newest');
  const shown = await show(w, as);
  t.not(shown.retryFrom, shown.receivedAt, 'a fresh retry clock');
});

t.test('an expired message replayed: its old 4.x result gives way to the new one; the reason names the exact age', async (t) => {
  const w = await start(t);
  const a = await agent(w, false);
  t.teardown(() => a.close());
  const id = String((await w.post('s@sender.test', 'dave@example.test', Buffer.from('Subject: late\r\n\r\nx\r\n'))).body.id);
  const m1 = await attempt(a, id, 1);
  await sleep(AGE + 100);
  a.send({ type: 'ack', id, results: [result(m1.recipients[0] ?? '', 452, '4.4.2', 'tempfail')] });
  await inState(w, id, 'dead-letter');
  const as = String((await admin(w, 'POST', `/admin/messages/${id}/replay`)).body.id);
  const m2 = await attempt(a, as, 2);
  t.same(m2.recipients, ['dave@example.test']);
  a.send({ type: 'ack', id: as, results: [result('dave@example.test', 550, '5.1.1', 'permfail')] });
  await inState(w, as, 'dead-letter');
  const results = (await show(w, as)).results as RecipientResult[];
  t.same(results.map((r) => r.enhanced), ['5.1.1'], 'dave listed once, with the newest answer');

  // Leased once more, then no agent: it expires from the alarm, its reason exact.
  const again = String((await admin(w, 'POST', `/admin/messages/${as}/replay`)).body.id);
  await attempt(a, again, 3);
  a.close();
  await a.closed;
  await inState(w, again, 'dead-letter');
  t.match((await show(w, again)).lastError, /not delivered within 2 s\b/, 'exact: not "within 0 h"');
});

t.test('a queued message expires from the alarm with no agent connected; the returning agent bounces it', async (t) => {
  const w = await start(t);
  const first = await agent(w, true);  // the last agent seen can bounce
  first.close();
  await first.closed;
  await eventually('no agent', async () => ((await admin(w, 'GET', '/admin/queue')).body.agents as unknown[]).length === 0);
  const id = String((await w.post('s@sender.test', 'dave@example.test', Buffer.from('Subject: nobody home\r\n\r\nx\r\n'))).body.id);
  await inState(w, id, 'bouncing');
  t.match(await show(w, id), { failure: 'expired', lastError: /not delivered within 2 s/ });
  const back = await agent(w, true);
  t.teardown(() => back.close());
  await back.until((seen) => seen.some((s) => s.kind === 'frame' && s.frame.type === 'bounce' && s.frame.id === id));
  t.notOk(back.frames().some((f) => f.type === 'message' && f.id === id), 'never leased after its age');
});

t.test('an identical resend after a dead-letter or a bounce is a new message', async (t) => {
  const w = await start(t);
  const body = Buffer.from('Subject: again\r\n\r\nsame bytes\r\n');
  // Dead-letter: no bounce relay.
  const a = await agent(w, false);
  const dead = String((await w.post('s@sender.test', 'dave@example.test', body)).body.id);
  await attempt(a, dead, 1);
  a.send({ type: 'ack', id: dead, results: [result('dave@example.test', 550, '5.1.1', 'permfail')] });
  await inState(w, dead, 'dead-letter');
  const again = await w.post('s@sender.test', 'dave@example.test', body);
  t.match(again.body, { duplicate: false }, 'not matched to the dead-lettered copy');
  t.not(again.body.id, dead);
  const m = await attempt(a, String(again.body.id), 1);
  a.send({ type: 'ack', id: m.id, results: [result('dave@example.test', 250, '2.0.0', 'delivered')] });
  await eventually('delivered', async () => (await admin(w, 'GET', `/admin/messages/${m.id}`)).status === 404);
  t.match((await w.post('s@sender.test', 'dave@example.test', body)).body, { id: m.id, duplicate: true }, 'a delivered copy still dedupes');
  a.close();
  await a.closed;

  // Bounced: with a bounce relay.
  const b = await agent(w, true);
  t.teardown(() => b.close());
  const other = Buffer.from('Subject: again 2\r\n\r\nsame bytes\r\n');
  const bounced = String((await w.post('s@sender.test', 'erin@example.test', other)).body.id);
  await attempt(b, bounced, 1);
  b.send({ type: 'ack', id: bounced, results: [result('erin@example.test', 550, '5.1.1', 'permfail')] });
  await b.until((seen) => seen.some((s) => s.kind === 'frame' && s.frame.type === 'bounce' && s.frame.id === bounced));
  b.send({ type: 'bounced', id: bounced, status: 'sent', code: 250, text: 'ok' });
  await inState(w, bounced, 'bounced');
  const resent = await w.post('s@sender.test', 'erin@example.test', other);
  t.match(resent.body, { duplicate: false });
  await attempt(b, String(resent.body.id), 1);
  t.pass('the resend is leased: it will be delivered');
});

t.test('a message in chunks (no R2 bucket) replayed under its new id comes whole', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0, bodies: false, vars: { ADMIN_TOKEN: ADMIN } });
  t.teardown(() => w.stop());
  const a = await agent(w, false);
  t.teardown(() => a.close());
  const raw = Buffer.concat([Buffer.from('Subject: chunks\r\n\r\n'), Buffer.alloc(3 << 20, 0xe9)]);
  const id = String((await w.post('s@sender.test', 'dave@example.test', raw)).body.id);
  const first = await a.received(id);
  a.send({ type: 'ack', id, results: [result('dave@example.test', 550, '5.1.1', 'permfail')] });
  await inState(w, id, 'dead-letter');
  const as = String((await admin(w, 'POST', `/admin/messages/${id}/replay`)).body.id);
  t.ok((await a.received(as, 20_000)).equals(first), 'every chunk, under the new id');
  a.send({ type: 'ack', id: as, results: [result('dave@example.test', 250, '2.0.0', 'delivered')] });
  await eventually('delivered', async () => (await admin(w, 'GET', `/admin/messages/${as}`)).status === 404);
});
