// The admin API in real workerd: views, retry-now, dead-letter replay and purge,
// and that nothing of it answers without ADMIN_TOKEN; STATUS_TOKEN reads the summary alone.
import t from 'tap';
import type { BounceFrame, MessageFrame, Outcome } from '../../protocol/wire.ts';
import { parseConfig } from '../../bridge-worker/config.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const ADMIN = 'admin-token-0123456789abcdef';
const STATUS = 'status-token-0123456789abcdef';
const AGE = 2000;

let w: TestWorker;
t.before(async () => {
  w = await startTestWorker({ vars: { ADMIN_TOKEN: ADMIN, STATUS_TOKEN: STATUS, RETRY_FIRST_MS: String(AGE), RETRY_MAX_MS: String(AGE), MAX_AGE_MS: String(AGE) } });
});
t.teardown(() => w.stop());

async function admin(method: string, path: string, token: string | null = ADMIN): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(new URL(path, w.rt.url), { method, headers: token === null ? {} : { Authorization: `Bearer ${token}` } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Polls until `check` holds (acks are processed asynchronously), failing after 5 s. */
async function eventually(what: string, check: () => Promise<boolean>): Promise<void> {
  for (const until = Date.now() + 5000; !(await check());) {
    if (Date.now() > until) throw new Error(`not within 5 s: ${what}`);
    await sleep(25);
  }
}
const inState = async (id: string, state: string) => (await admin('GET', `/admin/messages/${id}`)).body.state === state;

const ids = (body: Record<string, unknown>): string[] => (body.messages as { id: string }[]).map((m) => m.id);

/**
 * The message frame of attempt `n` of `id`: a body in R2 at once (this agent answers without
 * fetching it), chunks once their end frame has arrived too.
 */
const attempt = (a: RawAgent, id: string, n: number) => a.until((seen) => {
  const i = seen.findIndex((s) => s.kind === 'frame' && s.frame.type === 'message' && s.frame.id === id && s.frame.attempt === n);
  const f = seen[i];
  if (f?.kind !== 'frame' || f.frame.type !== 'message') return undefined;
  const ended = f.frame.fetch !== undefined || seen.slice(i).some((s) => s.kind === 'frame' && s.frame.type === 'end' && s.frame.id === id);
  return ended ? f.frame : undefined;
});

const answer = (a: RawAgent, m: MessageFrame, outcome: Outcome) => a.send({
  type: 'ack', id: m.id,
  results: m.recipients.map((recipient) => ({ recipient, code: outcome === 'delivered' ? 250 : 451, enhanced: null, text: outcome === 'delivered' ? 'ok' : 'busy', outcome })),
});

/** An agent takes message `id`, acks it delivered, and leaves once the queue has let it go. */
async function deliverNow(id: string): Promise<void> {
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await a.hello({ agent: 'admin-test', window: 4, credit: 8 << 20, fetch: true });
  answer(a, await attempt(a, id, 1), 'delivered');
  await eventually('acked', async () => (await admin('GET', `/admin/messages/${id}`)).status === 404);
  a.close();
  await a.closed;
}

t.test('no token, a wrong token, or the agent token: 401', async (t) => {
  for (const token of [null, 'admin-token-wrong-0123456789', AGENT_TOKEN]) {
    t.equal((await admin('GET', '/admin/queue', token)).status, 401);
  }
  t.equal((await admin('POST', `/admin/messages/${'a'.repeat(32)}/replay`, null)).status, 401, 'actions too');
});

t.test('views: summary, list by state, one message with its header fields (8-bit shown as UTF-8)', async (t) => {
  const raw = Buffer.concat([Buffer.from('Subject: caf'), Buffer.from([0xc3, 0xa9]), Buffer.from('\r\nX-Long: a\r\n b\r\n\r\nbody line\r\n')]);
  const posted = await w.post('s@sender.test', 'alice@example.test', raw);
  const id = String(posted.body.id);
  const q = await admin('GET', '/admin/queue');
  t.match(q.body, { states: { queued: 1 }, agents: [] });
  t.same(ids((await admin('GET', '/admin/messages?state=queued')).body), [id]);
  t.equal((await admin('GET', '/admin/messages?state=bogus')).status, 400);
  const one = await admin('GET', `/admin/messages/${id}`);
  const prefix = Number(one.body.prefix);
  t.ok(prefix > 0, 'the stand-in\'s Cloudflare block was found');
  t.match(one.body, { id, state: 'queued', sender: 's@sender.test', recipients: ['alice@example.test'], size: prefix + raw.length });
  // The stored message as Email Routing handed it over: Cloudflare's fields first, then the sender's.
  const names = (one.body.headers as { name: string }[]).map((h) => h.name);
  t.same(names.slice(0, 4), ['Received', 'ARC-Seal', 'ARC-Message-Signature', 'ARC-Authentication-Results']);
  t.same((one.body.headers as unknown[]).slice(-2), [{ name: 'Subject', value: 'café' }, { name: 'X-Long', value: 'a b' }]);
  t.equal((await admin('GET', `/admin/messages/${'f'.repeat(32)}`)).status, 404);
  t.equal((await admin('GET', '/admin/messages/not-an-id')).status, 400);

  await deliverNow(id);
});

t.test('retry now, dead-letter, replay with a fresh clock, purge', async (t) => {
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  t.teardown(() => a.close());
  await a.hello({ agent: 'admin-test', window: 4, credit: 8 << 20, fetch: true });
  t.match((await admin('GET', '/admin/queue')).body, { agents: [{ agent: 'admin-test' }] });

  const post = async (n: string) => String((await w.post('s@sender.test', 'alice@example.test', Buffer.from(`Subject: ${n}\r\n\r\n${n}\r\n`))).body.id);
  const [A, B, C] = [await post('A'), await post('B'), await post('C')];
  const bornAt = Date.now();

  // A: tempfail -> deferred for AGE ms; retry now brings attempt 2 at once.
  answer(a, await attempt(a, A, 1), 'tempfail');
  await eventually('A deferred', () => inState(A, 'deferred'));
  t.same(ids((await admin('GET', '/admin/messages?state=deferred')).body), [A]);
  t.match((await admin('GET', `/admin/messages/${A}`)).body, { state: 'deferred', lastError: /busy/ });
  t.equal((await admin('POST', `/admin/messages/${B}/retry`)).status, 409, 'B is in flight, not deferred');
  t.equal((await admin('POST', `/admin/messages/${A}/retry`)).status, 200);
  const a2 = await attempt(a, A, 2);
  t.ok(Date.now() - bornAt < AGE, 'retried before its backoff ran out');
  answer(a, a2, 'delivered');

  // B and C: tempfail once older than MAX_AGE_MS -> dead-letter.
  const [b1, c1] = [await attempt(a, B, 1), await attempt(a, C, 1)];
  await sleep(AGE + 100 - (Date.now() - bornAt));
  answer(a, b1, 'tempfail');
  answer(a, c1, 'tempfail');
  await eventually('B and C dead', async () => (await inState(B, 'dead-letter')) && inState(C, 'dead-letter'));
  t.same(ids((await admin('GET', '/admin/dead-letter')).body).sort(), [B, C].sort());
  t.equal((await admin('DELETE', `/admin/messages/${A}`)).status, 409, 'only dead-letter can be purged');

  // Replay B: queued again; a tempfail now defers it (fresh clock) instead of dead-lettering it.
  const replayed = await admin('POST', `/admin/messages/${B}/replay`);
  t.match(replayed, { status: 200, body: { replayedFrom: B, state: 'queued' } });
  const B2 = String(replayed.body.id);  // a new id (the agent's journal knows the old one)
  answer(a, await attempt(a, B2, 2), 'tempfail');
  await eventually('B settled', async () => !(await inState(B2, 'in-flight')));
  t.equal((await admin('GET', `/admin/messages/${B2}`)).body.state, 'deferred', 'fresh retry clock after replay');
  // Held: due again after AGE, it would otherwise count as queued in the tests below (a CI flake).
  t.equal((await admin('POST', `/admin/messages/${B2}/hold`)).status, 200, 'held, out of the later counts');

  t.ok((await w.bodyKeys()).includes(`queue/${C}`), 'a dead-lettered message keeps its body in R2');
  t.equal((await admin('DELETE', `/admin/messages/${C}`)).status, 200);
  t.equal((await admin('GET', `/admin/messages/${C}`)).status, 404, 'purged');
  t.notOk((await w.bodyKeys()).includes(`queue/${C}`), 'and its R2 object with it');
  t.equal((await admin('POST', `/admin/messages/${C}/replay`)).status, 409);
});

t.test('without ADMIN_TOKEN the API does not exist', async (t) => {
  const plain = await startTestWorker();
  t.teardown(() => plain.stop());
  const res = await fetch(new URL('/admin/queue', plain.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
  t.equal(res.status, 404);
});

t.test('STATUS_TOKEN reads /admin/queue and nothing else: no list, no message, no export, no action', async (t) => {
  const id = String((await w.post('s@sender.test', 'alice@example.test', Buffer.from('Subject: status\r\n\r\nhi\r\n'))).body.id);
  const before = Date.now();
  const q = await admin('GET', '/admin/queue', STATUS);
  t.equal(q.status, 200);
  t.match(q.body, { states: { queued: 1, 'dead-letter': Number }, bouncesSent: Number, oldestByState: { queued: Number, incoming: null } });
  t.ok(((q.body.oldestByState as Record<string, number>).queued ?? Infinity) <= before, 'the oldest queued message\'s receivedAt');
  const refused: [string, string][] = [
    ['GET', '/admin/messages'], ['GET', '/admin/messages?state=queued'], ['GET', '/admin/dead-letter'],
    ['GET', `/admin/messages/${id}`], ['GET', `/admin/messages/${id}/raw`],
    ['POST', `/admin/messages/${id}/retry`], ['POST', `/admin/messages/${id}/replay`], ['DELETE', `/admin/messages/${id}`],
  ];
  for (const [method, path] of refused) t.equal((await admin(method, path, STATUS)).status, 401, `${method} ${path}: 401`);
  t.equal((await admin('GET', `/admin/messages/${id}`)).body.state, 'queued', 'untouched; ADMIN_TOKEN still sees it');
  // Leave the queue as the other tests expect it: delivered.
  await deliverNow(id);
});

t.test('a bounce sent counts in bouncesSent; the queue keeps the count', async (t) => {
  const sent0 = Number((await admin('GET', '/admin/queue', STATUS)).body.bouncesSent);
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  t.teardown(() => a.close());
  await a.hello({ agent: 'admin-test', window: 4, credit: 8 << 20, bounces: true, fetch: true });
  const id = String((await w.post('s@sender.test', 'alice@example.test', Buffer.from('Subject: refused\r\n\r\nthe body, never quoted\r\n'))).body.id);
  const m = await attempt(a, id, 1);
  a.send({ type: 'ack', id, results: m.recipients.map((recipient) => ({ recipient, code: 550, enhanced: '5.1.1', text: 'no such user', outcome: 'permfail' as const })) });
  const task = await a.until((seen) => {
    const f = seen.find((s) => s.kind === 'frame' && s.frame.type === 'bounce' && s.frame.id === id);
    return f?.kind === 'frame' ? (f.frame as BounceFrame) : undefined;
  });
  const quoted = Buffer.from(task.headers, 'base64').toString('latin1');
  t.match(quoted, /^Received: [^]*\r\nSubject: refused\r\n$/, 'the task quotes the header section, from the row (the body is in R2)');
  t.notMatch(quoted, /never quoted/, 'and not a byte of the body');
  a.send({ type: 'bounced', id: task.id, status: 'sent', code: 250, text: '2.0.0 queued as X' });
  await eventually('bounced', () => inState(id, 'bounced'));
  t.ok((await w.bodyKeys()).includes(`queue/${id}`), 'a bounced message keeps its body for the retention period');
  t.match((await admin('GET', '/admin/queue', STATUS)).body, { bouncesSent: sent0 + 1, states: { bounced: Number } });
  t.equal((await admin('DELETE', `/admin/messages/${id}`)).status, 200, 'purged: the count stays');
  t.notOk((await w.bodyKeys()).includes(`queue/${id}`), 'the purge deleted its R2 object');
  t.equal(Number((await admin('GET', '/admin/queue', STATUS)).body.bouncesSent), sent0 + 1);
});

t.test('STATUS_TOKEN alone: the summary answers, the rest is 401; it must not equal another token', async (t) => {
  const only = await startTestWorker({ vars: { STATUS_TOKEN: STATUS } });
  t.teardown(() => only.stop());
  const get = (path: string) => fetch(new URL(path, only.rt.url), { headers: { Authorization: `Bearer ${STATUS}` } }).then((r) => r.status);
  t.equal(await get('/admin/queue'), 200);
  t.equal(await get('/admin/messages'), 401);
  t.throws(() => parseConfig({ ADMIN_TOKEN: ADMIN, STATUS_TOKEN: ADMIN }), { message: /STATUS_TOKEN: must differ from ADMIN_TOKEN and every agent token/ });
  t.throws(() => parseConfig({ AGENT_TOKENS: AGENT_TOKEN, STATUS_TOKEN: AGENT_TOKEN }), { message: /STATUS_TOKEN: must differ/ });
  t.throws(() => parseConfig({ STATUS_TOKEN: 'short' }), { message: /STATUS_TOKEN: must be at least 16/ });
});
