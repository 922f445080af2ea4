// Access and abuse (issue 6), against the real Worker and queue object in local workerd:
// who gets a session, who gets the admin API, what a second agent, oversized or
// out-of-order frames, foreign and replayed acks and slow clients can do, and the SMTP
// ingress's connection and recipient limits. Each behaviour asserted here is written down
// in docs/security.md.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket, { WebSocketServer } from 'ws';
import { validateConfig } from '../../edge-agent/agent-config.ts';
import { silentLogger } from '../../edge-agent/ops/log.ts';
import { AgentSession } from '../../edge-agent/session/session.ts';
import { startIngress } from '../../local/ingress.ts';
import { startLocalRelay } from '../../local/relay.ts';
import { startWorkerRuntime } from '../../local/worker-runtime.ts';
import {
  MAX_CHUNK_BYTES, MAX_CONTROL_FRAME, PROTOCOL_VERSION, encodeFrame,
  type AckFrame, type MessageFrame, type Outcome,
} from '../../protocol/wire.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { SmtpDialog } from '../helpers/smtp-dialog.ts';
import { AGENT_TOKEN, DEV_TOKEN, OLD_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const ADMIN = 'admin-token-of-the-access-tests-0123456789';
/** Short, so a released lease is visibly held for its agent name and then free for all. */
const AFFINITY = 1000;
const MiB = 1024 * 1024;

let w: TestWorker;
/** The slowloris upgrade runs in the background from the start; the last test reads its result. */
let slowUpgrade: Promise<{ closedAfterMs: number | null; received: string; sent: number }>;

t.before(async () => {
  w = await startTestWorker({ vars: { ADMIN_TOKEN: ADMIN, AFFINITY_MS: String(AFFINITY) } });
  slowUpgrade = trickleUpgrade(new URL(w.agentUrl()), 500, 30_000);
});
t.teardown(async () => {
  await slowUpgrade.catch(() => undefined);
  await w.stop();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it holds; fails after `ms`. */
async function eventually(what: string, check: () => Promise<boolean> | boolean, ms = 5_000): Promise<void> {
  for (const until = Date.now() + ms; !(await check());) {
    if (Date.now() > until) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(25);
  }
}

/** Resolves with `p`, or rejects after `ms` naming what did not happen. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`not within ${ms} ms: ${what}`)), ms); }),
  ]);
}

async function agent(name: string, opts: { token?: string; window?: number; credit?: number } = {}): Promise<RawAgent> {
  const a = new RawAgent(w.agentUrl(), opts.token ?? AGENT_TOKEN);
  await a.hello({ agent: name, window: opts.window ?? 4, credit: opts.credit ?? 8 * MiB, fetch: true });
  return a;
}

const messagesOf = (a: RawAgent, id?: string): MessageFrame[] =>
  a.frames().filter((f): f is MessageFrame => f.type === 'message' && (id === undefined || f.id === id));
const leased = (a: RawAgent, id: string, ms = 10_000): Promise<MessageFrame> => a.until(() => messagesOf(a, id).at(-1), ms);
const ended = async (a: RawAgent, id: string): Promise<boolean> => { await a.received(id); return true; };
const ackOf = (m: MessageFrame, outcome: Outcome = 'delivered'): AckFrame => ({
  type: 'ack', id: m.id,
  results: m.recipients.map((recipient) => ({ recipient, code: outcome === 'delivered' ? 250 : 451, enhanced: null, text: outcome, outcome })),
});

let posted = 0;
/** A new message (distinct bytes, so dedupe never merges two) for alice; returns its queue id. */
async function post(size = 0): Promise<string> {
  posted++;
  const head = Buffer.from(`Message-ID: <access-${posted}@example.net>\r\nSubject: access ${posted}\r\n\r\n`);
  const r = await w.post('s@sender.test', 'alice@example.test', Buffer.concat([head, Buffer.alloc(size, 0x61), Buffer.from('\r\n')]));
  if (r.status !== 200) throw new Error(`post: ${r.status} ${JSON.stringify(r.body)}`);
  return String(r.body.id);
}

async function adminGet(path: string, token: string | null = ADMIN, method = 'GET'): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(new URL(path, w.rt.url), { method, headers: token === null ? {} : { Authorization: `Bearer ${token}` } });
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try { body = JSON.parse(text) as Record<string, unknown>; } catch { body = { text }; }
  return { status: res.status, body };
}

/** A message's row as the admin API shows it, or null once it has left the queue. */
async function row(id: string): Promise<{ state: string; leaseSession: string | null; attempts: number; lastError: string | null } | null> {
  const r = await adminGet(`/admin/messages/${id}`);
  if (r.status === 404) return null;
  return {
    state: String(r.body.state), leaseSession: (r.body.leaseSession as string | null) ?? null, attempts: Number(r.body.attempts),
    lastError: (r.body.lastError as string | null) ?? null,
  };
}

const connectedEvents = (): number => w.logs.filter((l) => l.includes('"event":"agent.connected"')).length;
const logged = (event: string, fragment = ''): boolean => w.logs.some((l) => l.includes(`"event":"${event}"`) && l.includes(fragment));

/**
 * A WebSocket upgrade request written one byte every `everyMs`, never finished (a slowloris).
 * Resolves when the server closes the connection, or after `maxMs` (closedAfterMs null).
 */
function trickleUpgrade(url: URL, everyMs: number, maxMs: number): Promise<{ closedAfterMs: number | null; received: string; sent: number }> {
  const req = `GET /agent HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${AGENT_TOKEN}\r\n` +
    `X-Padding: ${'p'.repeat(200)}\r\n`;
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = net.connect(Number(url.port), url.hostname);
    let received = '';
    let sent = 0;
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearInterval(drip);
      clearTimeout(cap);
      socket.destroy();
      resolve({ closedAfterMs: closed ? Date.now() - started : null, received, sent });
    };
    const drip = setInterval(() => {
      if (sent < req.length) socket.write(req[sent++] ?? '');
    }, everyMs);
    const cap = setTimeout(() => finish(false), maxMs);
    socket.on('data', (d: Buffer) => { received += d.toString('latin1'); });
    socket.on('error', () => undefined);
    socket.on('close', () => finish(true));
  });
}

// ---- tokens ---------------------------------------------------------------------------

t.test('the agent endpoint opens a session only for an exact agent token in the Authorization header', async (t) => {
  const url = w.agentUrl();
  const basic = `Basic ${Buffer.from(`agent:${AGENT_TOKEN}`).toString('base64')}`;
  const refused: [string, string, Record<string, string>][] = [
    ['no token', url, {}],
    ['a wrong token', url, { Authorization: 'Bearer agent-token-wrong-0123456789' }],
    ['the token minus its last character', url, { Authorization: `Bearer ${AGENT_TOKEN.slice(0, -1)}` }],
    ['the token plus one character', url, { Authorization: `Bearer ${AGENT_TOKEN}x` }],
    ['the token in the query string (?token=)', `${url}?token=${AGENT_TOKEN}`, {}],
    ['the token in the query string (?access_token=)', `${url}?access_token=${AGENT_TOKEN}`, {}],
    ['the token as the WebSocket subprotocol', url, { 'Sec-WebSocket-Protocol': AGENT_TOKEN }],
    ['the token in a Cookie', url, { Cookie: `token=${AGENT_TOKEN}` }],
    ['the token under Basic', url, { Authorization: basic }],
    ['the scheme in lower case ("bearer")', url, { Authorization: `bearer ${AGENT_TOKEN}` }],
    ['two spaces after Bearer', url, { Authorization: `Bearer  ${AGENT_TOKEN}` }],
    ['both agent tokens, comma-joined', url, { Authorization: `Bearer ${AGENT_TOKEN},${OLD_TOKEN}` }],
    ['the admin token', url, { Authorization: `Bearer ${ADMIN}` }],
    ['the dev-ingress token', url, { Authorization: `Bearer ${DEV_TOKEN}` }],
    ['no token, a shard that does not exist (the shard count is not disclosed)', `${url}?shard=99`, {}],
  ];
  const before = connectedEvents();
  for (const [name, u, headers] of refused) {
    const a = new RawAgent(u, null, headers);
    await t.rejects(within(a.opened, 10_000, name), /HTTP 401/, `${name}: 401`);
  }
  t.equal(connectedEvents(), before, 'none of them reached the queue object (the Worker answers 401 first)');

  const bad = new RawAgent(`${url}?shard=99`, AGENT_TOKEN);
  await t.rejects(bad.opened, /HTTP 404/, 'a valid token and a shard that does not exist: 404');
  for (const token of [AGENT_TOKEN, OLD_TOKEN]) {
    const a = new RawAgent(url, token);
    await t.resolves(within(a.opened, 10_000, 'open'), `a configured token (${token === AGENT_TOKEN ? 'current' : 'the other one of a rotation'}) opens a session`);
    a.close();
    await a.closed;
  }
});

t.test('a revoked token: refused after the rotation restarts the object; what it held is delivered by the new token', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-revoke-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const start = (tokens: string[]) => startWorkerRuntime({
    persistDir: dir, agentTokens: tokens, devIngressToken: DEV_TOKEN, verdictWaitMs: 0, vars: { AFFINITY_MS: '0' },
  });
  const wsUrl = (u: URL): string => new URL('/agent', u).href.replace(/^http/, 'ws');
  const hello = async (rtUrl: URL, token: string, name: string): Promise<RawAgent> => {
    const a = new RawAgent(wsUrl(rtUrl), token);
    await a.hello({ agent: name, window: 4, credit: 8 * MiB, fetch: true });
    return a;
  };
  let rt = await start([AGENT_TOKEN, OLD_TOKEN]);
  t.teardown(() => rt.dispose());
  const old = await hello(rt.url, OLD_TOKEN, 'old-home');
  const url = new URL('/dev/email', rt.url);
  url.searchParams.set('from', 's@sender.test');
  url.searchParams.set('to', 'alice@example.test');
  const res = await fetch(url, { method: 'POST', body: 'Subject: held by the old token\r\n\r\nx\r\n', headers: { Authorization: `Bearer ${DEV_TOKEN}` } });
  const id = String(((await res.json()) as Record<string, unknown>).id);
  await leased(old, id);
  t.equal((await rt.summary())['in-flight'], 1, 'leased to the connection of the old token');

  // Rotating a secret deploys a new version; Cloudflare restarts the object and drops its
  // sockets. Here: the runtime restarts on the same storage with the old token removed.
  await rt.dispose();
  rt = await start([AGENT_TOKEN]);
  const closed = await within(old.closed, 10_000, 'the old session to end');
  t.not(closed.code, 1000, `the old token's session ended with the object (${closed.code})`);
  const again = new RawAgent(wsUrl(rt.url), OLD_TOKEN);
  await t.rejects(again.opened, /HTTP 401/, 'the revoked token is refused');
  const fresh = await hello(rt.url, AGENT_TOKEN, 'new-home');
  const m = await leased(fresh, id);
  t.equal(m.attempt, 2, 'the message the revoked session held goes to the new token\'s session');
  await ended(fresh, id);
  fresh.send(ackOf(m));
  await eventually('the queue to be empty', async () => ((await rt.summary())['in-flight'] ?? 0) === 0);
  const admin = await fetch(new URL('/admin/queue', rt.url), { headers: { Authorization: `Bearer ${AGENT_TOKEN}` } });
  t.equal(admin.status, 404, 'without ADMIN_TOKEN the admin API does not exist, whatever token is shown');
  fresh.close();
  await fresh.closed;
});

t.test('the admin API answers the admin token only: every other credential gets 401, never 403', async (t) => {
  const id = await post();
  const routes: [string, string][] = [
    ['GET', '/admin/queue'], ['GET', '/admin/messages'], ['GET', '/admin/dead-letter'], ['GET', `/admin/messages/${id}`],
    ['GET', `/admin/messages/${id}/raw`], ['POST', `/admin/messages/${id}/retry`], ['POST', `/admin/messages/${id}/replay`],
    ['DELETE', `/admin/messages/${id}`],
  ];
  const creds: [string, string | null][] = [['no token', null], ['the agent token', AGENT_TOKEN], ['the other agent token', OLD_TOKEN], ['the dev-ingress token', DEV_TOKEN]];
  for (const [method, path] of routes) {
    for (const [name, token] of creds) {
      const r = await adminGet(path, token, method);
      t.equal(r.status, 401, `${method} ${path} with ${name}: 401`);
      t.same(r.body, { error: 'bad or missing bearer token' }, 'and nothing else');
    }
    const q = await adminGet(`${path}${path.includes('?') ? '&' : '?'}token=${ADMIN}`, null, method);
    t.equal(q.status, 401, `${method} ${path} with the admin token in the query string: 401`);
  }
  t.equal((await adminGet('/admin/queue')).status, 200, 'the admin token: 200');
  const raw = await fetch(new URL(`/admin/messages/${id}/raw`, w.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
  t.equal(raw.status, 200, 'the admin token reads the stored bytes');
  await raw.arrayBuffer();
  for (const [name, token] of [['no token', null], ['the agent token', AGENT_TOKEN], ['the admin token', ADMIN]] as const) {
    const url = new URL('/dev/email?from=a@b.test&to=alice@example.test', w.rt.url);
    const res = await fetch(url, { method: 'POST', body: 'x', headers: token === null ? {} : { Authorization: `Bearer ${token}` } });
    t.equal(res.status, 401, `/dev/email with ${name}: 401 (it takes only DEV_INGRESS_TOKEN)`);
  }
  // Leave nothing queued for the tests after this one.
  const a = await agent('admin-cleanup');
  const m = await leased(a, id);
  await ended(a, id);
  a.send(ackOf(m));
  await eventually('the message acked', async () => (await row(id)) === null);
  a.close();
  await a.closed;
});

// ---- a second agent -----------------------------------------------------------------------

t.test('a second agent with a valid token shares the queue; its name is not an identity', async (t) => {
  const home = await agent('home', { window: 1 });
  const other = await agent('intruder', { token: OLD_TOKEN, window: 1 });
  const ids = [await post(), await post()];
  await eventually('both messages leased', () => ids.every((id) => messagesOf(home, id).length + messagesOf(other, id).length === 1));
  t.ok(ids.every((id) => messagesOf(home, id).length + messagesOf(other, id).length === 1), 'each message is leased to exactly one connection');
  t.ok(messagesOf(home).length === 1 && messagesOf(other).length === 1, 'both connections get mail (window 1 each): any holder of a token takes a share');
  const agents = (await adminGet('/admin/queue')).body.agents as { agent: string }[];
  t.same(agents.map((a) => a.agent).sort(), ['home', 'intruder'], 'the admin API lists both connections');

  // Names are what the hello says: a second connection may use the name of the first.
  const twin = await agent('home', { token: OLD_TOKEN, window: 4 });
  const listed = (await adminGet('/admin/queue')).body.agents as { agent: string }[];
  t.equal(listed.filter((a) => a.agent === 'home').length, 2, 'two connections may call themselves "home"');

  // Affinity (AFFINITY_MS) holds a dropped connection's messages for its agent *name*:
  // a connection that claims the name gets them at once, before anyone else.
  const mine = messagesOf(home)[0];
  if (!mine) throw new Error('home holds no message');
  await ended(home, mine.id);
  home.ws.terminate();
  await home.closed;
  const taken = await leased(twin, mine.id, AFFINITY * 3);
  t.equal(taken.attempt, 2, 'the twin that claims the name "home" takes home\'s message under affinity');
  await ended(twin, taken.id);
  twin.send(ackOf(taken));
  const theirs = messagesOf(other)[0];
  if (theirs) {
    await ended(other, theirs.id);
    other.send(ackOf(theirs));
  }
  await eventually('both acked', async () => (await row(ids[0] ?? '')) === null && (await row(ids[1] ?? '')) === null);
  for (const a of [other, twin]) a.close();
  await Promise.all([other.closed, twin.closed]);
});

// ---- frames ------------------------------------------------------------------------------

t.test('oversized frames close the connection; its lease goes back to the queue', async (t) => {
  const a = await agent('big', { window: 1 });
  const id = await post();
  const m = await leased(a, id);
  await ended(a, id);

  // A control frame of exactly MAX_CONTROL_FRAME characters is within the limit.
  const pad = (n: number): string => {
    const base = JSON.stringify({ type: 'credit', bytes: 1, pad: '' });
    return JSON.stringify({ type: 'credit', bytes: 1, pad: 'x'.repeat(n - base.length) });
  };
  t.equal(pad(MAX_CONTROL_FRAME).length, MAX_CONTROL_FRAME);
  a.send(pad(MAX_CONTROL_FRAME));
  await sleep(300);
  t.equal(a.ws.readyState, WebSocket.OPEN, `a ${MAX_CONTROL_FRAME}-character control frame is accepted`);
  a.send(pad(MAX_CONTROL_FRAME + 1));
  t.same(await within(a.closed, 5_000, 'close'), { code: 1008, reason: 'malformed or unknown frame' }, 'one character more: 1008');
  t.match(await row(id), { state: 'queued', leaseSession: null }, 'its message is queued again');

  const b = await agent('big', { window: 1 });
  const again = await leased(b, id);
  t.equal(again.attempt, m.attempt + 1, 'and leased to the next connection of that agent');
  await ended(b, id);
  b.send(`{"type":"credit","bytes":1,"pad":"${'x'.repeat(2 * MiB)}"}`);
  t.same(await within(b.closed, 5_000, 'close'), { code: 1008, reason: 'malformed or unknown frame' }, 'a 2 MiB text frame: 1008');

  for (const size of [1, 2 * MiB + 1]) {
    const c = await agent('big', { window: 1 });
    c.ws.send(Buffer.alloc(size));
    t.same(await within(c.closed, 5_000, 'close'), { code: 1008, reason: 'binary frame from agent' }, `a ${size}-byte binary frame from the agent: 1008`);
  }

  // Above workerd's own limit (32 MiB) the runtime refuses the frame before our code runs:
  // close 1009, and the object's error handler releases the lease like any disconnect.
  const d = await agent('big', { window: 1 });
  const third = await leased(d, id);
  await ended(d, id);
  d.ws.send(Buffer.from(`{"type":"credit","bytes":1,"pad":"${'x'.repeat(33 * MiB)}"}`), { binary: false });
  await eventually('the runtime to drop the socket with 1009', () => logged('agent.disconnected', '1009'), 20_000);
  t.pass('a 33 MiB frame: the runtime closes with 1009 "Message is too large"');
  d.ws.terminate();
  const e = await agent('big', { window: 1 });
  const fourth = await leased(e, id);
  t.equal(fourth.attempt, third.attempt + 1, 'the object survives and the message is leased again');
  await ended(e, id);
  e.send(ackOf(fourth));
  await eventually('acked', async () => (await row(id)) === null);
  e.close();
  await e.closed;
});

t.test('frames out of order', async (t) => {
  const raw = async (): Promise<RawAgent> => {
    const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
    await a.opened;
    return a;
  };
  const p = await raw();
  p.send('ping');
  await p.until((s) => s.some((x) => x.kind === 'text' && x.text === 'pong'));
  t.pass('a heartbeat before hello is answered by the runtime (the object does not wake)');
  p.send({ type: 'hello', v: PROTOCOL_VERSION, agent: 'ooo', window: 1, credit: MiB, fetch: true });
  await p.until((s) => s.some((x) => x.kind === 'frame' && x.frame.type === 'welcome'));
  p.send({ type: 'hello', v: PROTOCOL_VERSION, agent: 'ooo', window: 1, credit: MiB, fetch: true });
  t.same(await within(p.closed, 5_000, 'close'), { code: 1008, reason: 'second hello' }, 'a second hello: 1008');

  const early: [string, string][] = [
    ['credit before hello', encodeFrame({ type: 'credit', bytes: 1 })],
    ['ack before hello', encodeFrame({ type: 'ack', id: 'a'.repeat(32), results: [{ recipient: 'x@example.test', code: 250, enhanced: null, text: '', outcome: 'delivered' }] })],
    ['nack before hello', encodeFrame({ type: 'nack', id: 'a'.repeat(32), reason: 'shutdown', text: '' })],
  ];
  for (const [name, frame] of early) {
    const a = await raw();
    a.send(frame);
    t.same(await within(a.closed, 5_000, 'close'), { code: 1008, reason: 'frame before hello' }, `${name}: 1008`);
  }
  const objectFrames = [
    { type: 'welcome', v: 1, session: 'a'.repeat(32), window: 1, maxChunk: 1 },
    { type: 'message', id: 'a'.repeat(32), attempt: 1, sender: '', recipients: ['x@example.test'], size: 1, sha256: 'a'.repeat(64), receivedAt: 1 },
    { type: 'end', id: 'a'.repeat(32), chunks: 1 },
  ];
  for (const f of objectFrames) {
    const a = await agent('ooo');
    a.send(JSON.stringify(f));
    t.same(await within(a.closed, 5_000, 'close'), { code: 1008, reason: 'malformed or unknown frame' }, `a ${f.type} frame from the agent: 1008`);
  }

  // (An ack before the end frame of a message in chunks: chunk-path.test.ts. A body in R2 has none.)
  const id = await post(MAX_CHUNK_BYTES + 10);
  const next = await agent('ooo', { window: 1 });
  const again = await leased(next, id);
  // Under the stand-in's Cloudflare block (again.prefix bytes), the sender's bytes.
  t.equal((await next.received(id)).length, (again.prefix ?? 0) + MAX_CHUNK_BYTES + 10 + Buffer.byteLength(`Message-ID: <access-${posted}@example.net>\r\nSubject: access ${posted}\r\n\r\n`) + 2, 'fetched whole');
  next.send({ ...ackOf(again), results: [{ recipient: 'bob@example.test', code: 250, enhanced: null, text: '', outcome: 'delivered' }] });
  // An answer the object cannot accept affects that message only: deferred with the reason.
  await eventually('the message to be deferred', async () => (await row(id))?.state === 'deferred');
  t.equal(next.ws.readyState, WebSocket.OPEN, 'an ack for other recipients: the connection stays (no 1008)');
  t.ok(logged('agent.answer-rejected', id), 'the object logs why it did not take the ack');
  const retried = await fetch(new URL(`/admin/messages/${id}/retry`, w.rt.url), { method: 'POST', headers: { Authorization: `Bearer ${ADMIN}` } });
  t.equal(retried.status, 200, 'an operator can retry it at once');
  const fin = await leased(next, id);
  await ended(next, id);
  next.send(ackOf(fin));
  await eventually('acked', async () => (await row(id)) === null);
  next.close();
  await next.closed;
});

t.test('an ack that breaks the frame limits defers its message; the connection and the rest of the queue go on', async (t) => {
  const a = await agent('limits', { window: 2 });
  const bad = await post();
  const good = await post();
  const mb = await leased(a, bad);
  const mg = await leased(a, good);
  await ended(a, bad);
  await ended(a, good);
  // A target's long reply, sent unclamped: 5,000 characters where the wire allows 1,000.
  a.send({ ...ackOf(mb, 'tempfail'), results: [{ recipient: mb.recipients[0] ?? '', code: 451, enhanced: '4.3.0', text: 'x'.repeat(5000), outcome: 'tempfail' }] });
  await eventually('the bad one to be deferred', async () => (await row(bad))?.state === 'deferred');
  t.equal(a.ws.readyState, WebSocket.OPEN, 'no 1008: the connection stays');
  a.send(ackOf(mg));
  await eventually('the good one to be acked on the same connection', async () => (await row(good)) === null);
  t.match(await row(bad), { state: 'deferred', lastError: /broke the wire protocol/ }, 'the reason is kept with the message');
  await fetch(new URL(`/admin/messages/${bad}/retry`, w.rt.url), { method: 'POST', headers: { Authorization: `Bearer ${ADMIN}` } });
  const again = await leased(a, bad);
  await ended(a, bad);
  a.send(ackOf(again));
  await eventually('acked', async () => (await row(bad)) === null);
  a.close();
  await a.closed;
});

t.test('acks and nacks for a message leased to another connection are ignored', async (t) => {
  const owner = await agent('home', { window: 1 });
  const id = await post();
  const m = await leased(owner, id);
  await ended(owner, id);
  const before = await row(id);
  // Another connection, even one that calls itself by the same name, with the other token.
  const other = await agent('home', { token: OLD_TOKEN, window: 1 });
  other.send(ackOf(m));
  other.send(ackOf(m, 'tempfail'));
  other.send({ ...ackOf(m), results: [{ recipient: 'mallory@example.test', code: 250, enhanced: null, text: '', outcome: 'delivered' }] });
  other.send({ type: 'nack', id, reason: 'corrupt', text: 'not mine' });
  other.send({ type: 'nack', id, reason: 'shutdown', text: 'not mine' });
  await eventually('the object to have read them', () => w.logs.filter((l) => l.includes('"event":"nack.ignored"') && l.includes(id)).length >= 2);
  t.equal(other.ws.readyState, WebSocket.OPEN, 'the other connection is not closed (acks are idempotent, no 1008)');
  t.ok(logged('ack.ignored', id), 'the object logs ack.ignored');
  t.same(await row(id), before, 'the message is untouched: in flight, same lease, same attempt count');
  owner.send(ackOf(m));
  await eventually('the owner\'s ack settles it', async () => (await row(id)) === null);
  t.pass('the connection holding the lease settles it');
  for (const a of [owner, other]) a.close();
  await Promise.all([owner.closed, other.closed]);
});

t.test('replayed old acks change nothing', async (t) => {
  const a = await agent('replay', { window: 1 });
  const body = Buffer.from('Message-ID: <replay-1@example.net>\r\nSubject: replay\r\n\r\nonce\r\n');
  const first = await w.post('s@sender.test', 'alice@example.test', body);
  const id = String(first.body.id);
  const m = await leased(a, id);
  await ended(a, id);
  a.send(ackOf(m));
  await eventually('acked', async () => (await row(id)) === null);
  a.send(ackOf(m));
  a.send(ackOf(m, 'tempfail'));
  await eventually('the replays read', () => w.logs.filter((l) => l.includes('"event":"ack.ignored"') && l.includes(id)).length >= 2);
  t.equal(a.ws.readyState, WebSocket.OPEN, 'replays of a settled message are ignored, the connection stays');
  t.equal(await row(id), null, 'a replayed tempfail does not bring it back as deferred');
  const again = await w.post('s@sender.test', 'alice@example.test', body);
  t.match(again.body, { id, duplicate: true }, 'its dedupe key is still remembered');
  a.close();
  await a.closed;

  // An old connection's ack, replayed by someone else after the message moved on.
  const b = await agent('replay', { window: 1 });
  const id2 = await post();
  const m2 = await leased(b, id2);
  await ended(b, id2);
  const oldAck = ackOf(m2);
  b.ws.terminate();
  await b.closed;
  const b2 = await agent('replay', { window: 1 });
  const m2again = await leased(b2, id2);
  const outsider = await agent('outsider', { token: OLD_TOKEN });
  outsider.send(oldAck);
  await eventually('read', () => w.logs.filter((l) => l.includes('"event":"ack.ignored"') && l.includes(id2)).length >= 1);
  t.match(await row(id2), { state: 'in-flight', attempts: 2 }, 'the old ack, replayed by another connection, does not settle the new lease');
  await ended(b2, id2);
  b2.send(ackOf(m2again));
  await eventually('acked', async () => (await row(id2)) === null);
  for (const x of [b2, outsider]) x.close();
  await Promise.all([b2.closed, outsider.closed]);
});

// ---- slow and silent clients -----------------------------------------------------------------

t.test('silent sockets: what bounds them (AGENT_SILENT_MS)', async (t) => {
  // A runtime of its own: a fresh, idle object, and a short silence limit.
  const SILENT = 1000;
  const s = await startTestWorker({ vars: { AGENT_SILENT_MS: String(SILENT), AFFINITY_MS: '0', ADMIN_TOKEN: ADMIN } });
  t.teardown(() => s.stop());
  const url = s.agentUrl();
  const open = async (): Promise<RawAgent> => {
    const a = new RawAgent(url, AGENT_TOKEN);
    await a.opened;
    return a;
  };
  const hello = (a: RawAgent, name: string): Promise<void> => a.hello({ agent: name, window: 1, credit: 8 * MiB, fetch: true });
  const pinging = (a: RawAgent): void => {
    const timer = setInterval(() => { if (a.ws.readyState === WebSocket.OPEN) a.send('ping'); }, 200);
    a.ws.once('close', () => clearInterval(timer));
  };
  const sPost = async (tag: string): Promise<string> => {
    const r = await s.post('s@sender.test', 'alice@example.test', Buffer.from(`Subject: ${tag}\r\n\r\n${tag}\r\n`));
    return String(r.body.id);
  };
  const sRow = async (id: string): Promise<Record<string, unknown> | null> => {
    const r = await fetch(new URL(`/admin/messages/${id}`, s.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
    return r.status === 404 ? null : ((await r.json()) as Record<string, unknown>);
  };
  const isClosed = (a: RawAgent): boolean => a.ws.readyState === WebSocket.CLOSED || a.ws.readyState === WebSocket.CLOSING;

  // 1. The very first socket of an idle object, silent from the start (no hello, no ping).
  const first = await open();
  await sleep(SILENT * 3);
  t.ok(isClosed(first), `an idle object closes a socket that never sent anything within AGENT_SILENT_MS (${SILENT} ms) and its check interval`);
  const id = await sPost('wake');  // any event arms the alarm; this message waits for an agent
  // The object's close frame arrives at once; the TCP connection lingers until the client's own
  // close timeout, so the test looks at the close handshake, not at the 'close' event.
  await eventually('the silent socket to be closed once the alarm runs', () => isClosed(first), SILENT * 4);
  t.pass('once the alarm is armed, the silent socket is closed');
  first.ws.terminate();

  // 2. Hello, a lease, then a half-open path (the client stops reading and writing): the
  // object closes it after AGENT_SILENT_MS and releases its lease.
  const quiet = await open();
  await hello(quiet, 'quiet');
  const m = await leased(quiet, id);
  await ended(quiet, id);
  (quiet.ws as unknown as { _socket: net.Socket })._socket.pause();
  const since = Date.now();
  await eventually('the object to close the silent agent', () => s.logs.some((l) => l.includes('"event":"agent.silent"') && l.includes('"agent":"quiet"')), SILENT * 4);
  t.ok(Date.now() - since < SILENT * 3, `an agent that stops sending heartbeats is closed within ${Date.now() - since} ms`);
  await sleep(SILENT * 2);  // several more checks of the alarm
  t.match(await sRow(id), { state: 'queued', attempts: m.attempt }, 'its message is queued again, not counted as another attempt');
  const taker = await open();
  pinging(taker);
  await hello(taker, 'taker');
  const again = await leased(taker, id, SILENT * 4);
  t.equal(again.attempt, m.attempt + 1, 'a live agent gets it as the next attempt');
  quiet.ws.terminate();

  // 3. A live agent (heartbeats) that never acks keeps its lease: no per-lease timeout.
  // 4. Heartbeats but never a hello: kept open, given nothing, not counted as an agent.
  const lurker = await open();
  pinging(lurker);
  const id2 = await sPost('queued while a lurker is connected');
  await sleep(SILENT * 3);
  t.equal(taker.ws.readyState, WebSocket.OPEN, 'a heartbeating agent stays connected');
  t.match(await sRow(id), { state: 'in-flight', attempts: again.attempt }, `and keeps its unacknowledged lease after ${SILENT * 3} ms: a live agent's leases never time out`);
  t.equal(lurker.ws.readyState, WebSocket.OPEN, 'a socket that only sends heartbeats (no hello) is kept');
  t.notOk(lurker.seen.some((x) => x.kind !== 'text'), 'it is sent no frame and no chunk');
  t.match(await sRow(id2), { state: 'queued' }, 'mail waits for a real agent instead (the taker\'s window is full)');
  const q = await fetch(new URL('/admin/queue', s.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
  t.same(((await q.json()) as { agents: { agent: string }[] }).agents.map((a) => a.agent), ['taker'], 'only the agent that said hello is listed');

  await ended(taker, id);
  taker.send(ackOf(again));
  for (const a of [taker, lurker]) a.close();
  await Promise.all([taker.closed, lurker.closed]);
});

t.test('the agent side: a frame over 2 MiB from the object ends the session, no crash', async (t) => {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise<void>((r) => server.once('listening', () => r()));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  for (const binary of [true, false]) {
    server.once('connection', (sock) => {
      sock.once('message', () => {
        sock.send(encodeFrame({ type: 'welcome', v: PROTOCOL_VERSION, session: 'b'.repeat(32), window: 1, maxChunk: MAX_CHUNK_BYTES }));
        sock.send(binary ? Buffer.alloc(2 * MiB + 1) : 'x'.repeat(2 * MiB + 1), { binary });
      });
    });
    const cfg = validateConfig({ workerUrl: `ws://127.0.0.1:${port}/agent`, token: AGENT_TOKEN, target: 'lmtp://127.0.0.1:9', name: 'edge' });
    const events: { event: string; fields: Record<string, unknown> }[] = [];
    const s = new AgentSession(cfg, () => Promise.reject(new Error('no delivery expected')), (event, fields = {}) => { events.push({ event, fields }); });
    await within(s.ready, 5_000, 'welcome');
    const end = await within(s.closed, 5_000, 'the session to end');
    const kind = binary ? 'binary' : 'text';
    t.ok(events.some((e) => e.event === 'ws.error' && /Max payload size exceeded/.test(String(e.fields.error))),
      `a ${kind} frame of 2 MiB + 1 byte: refused from its length, before it is buffered (ws maxPayload)`);
    t.equal(end.code, 1006, 'the agent drops the socket at once (1006, no close handshake), as after any other drop');
  }
});

// ---- the SMTP ingress (local mode) --------------------------------------------------------

t.test('SMTP ingress flooding in local mode: 20 connections, 100 recipients, 16 KiB commands', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'mailbridge-flood-'));
  const relay = await startLocalRelay({ dataDir, smtpPort: 0, log: silentLogger });
  t.teardown(async () => {
    await relay.stop();
    await rm(dataDir, { recursive: true, force: true });
  });
  const open: SmtpDialog[] = [];
  t.teardown(() => { for (const d of open) d.destroy(); });
  for (let i = 0; i < 20; i++) {
    const d = await SmtpDialog.open(relay.smtpPort);
    open.push(d);
    t.equal((await d.replies(1))[0]?.code, 220, `connection ${i + 1}: 220`);
  }
  const extra = await SmtpDialog.open(relay.smtpPort);
  const [refused] = await extra.replies(1);
  t.equal(refused?.code, 421, 'the 21st connection: 421');
  t.match(refused?.text, /Too many connected clients, try again in a moment/);
  await within(extra.closed, 5_000, 'the server to close the 21st connection');
  t.pass('and it is closed');
  open.pop()?.destroy();
  await sleep(200);
  const later = await SmtpDialog.open(relay.smtpPort);
  open.push(later);
  t.equal((await later.replies(1))[0]?.code, 220, 'a slot that frees up is usable again');

  const d = open[0];
  if (!d) throw new Error('no connection');
  await d.send('EHLO flood.test\r\n');
  t.equal((await d.send('MAIL FROM:<s@example.net>\r\n'))[0]?.code, 250);
  const rcpt = Array.from({ length: 101 }, (_, i) => `RCPT TO:<r${i}@example.test>\r\n`).join('');
  const replies = await d.send(rcpt, 101);
  t.same(replies.slice(0, 100).map((r) => r.code), Array.from({ length: 100 }, () => 250), '100 recipients are accepted');
  t.same(replies[100], { code: 452, text: '4.5.3 Too many recipients' }, 'the 101st: 452 4.5.3');
  t.equal((await d.send('RSET\r\n'))[0]?.code, 250);

  const [tooLong] = await d.send(`MAIL FROM:<${'a'.repeat(17 * 1024)}@example.net>\r\n`);
  t.same(tooLong, { code: 421, text: 'Error: Command line too long' }, 'a command line over 16 KiB: 421');
  await within(d.closed, 5_000, 'the close');
  t.pass('and the connection is closed');

  const g = open[1];
  if (!g) throw new Error('no connection');
  const junk = await g.send(Array.from({ length: 10 }, (_, i) => `JUNK${i}\r\n`).join(''), 10);
  t.same(junk.map((r) => r.code), [...Array.from({ length: 9 }, () => 500), 421], 'ten unrecognised commands: the tenth gets 421');
});

t.test('a 100-recipient message: one reply line naming every queue id', async (t) => {
  // With a stand-in for the Worker, so that 100 handoffs cost nothing.
  const spoolDir = await mkdtemp(join(tmpdir(), 'mailbridge-spool-'));
  let handoffs = 0;
  const ingress = await startIngress({
    port: 0, spoolDir, maxBytes: MiB,
    handoff: { send: async () => ({ ok: true, id: (++handoffs).toString(16).padStart(32, '0') }) },
  });
  t.teardown(async () => {
    await ingress.close();
    await rm(spoolDir, { recursive: true, force: true });
  });
  const d = await SmtpDialog.open(ingress.port);
  await d.replies(1);
  await d.send('EHLO flood.test\r\n');
  await d.send('MAIL FROM:<s@example.net>\r\n');
  await d.send(Array.from({ length: 100 }, (_, i) => `RCPT TO:<r${i}@example.test>\r\n`).join(''), 100);
  await d.send('DATA\r\n');
  const [done] = await d.send('Subject: many\r\n\r\nx\r\n.\r\n', 1, 30_000);
  t.equal(done?.code, 250);
  t.equal(handoffs, 100, 'one handoff per recipient');
  const line = `250 ${done?.text ?? ''}\r\n`;
  t.ok(line.length <= 512, `the reply line is at most 512 octets (RFC 5321 4.5.3.1.5); it is ${line.length}`);
  await d.quit();
});

t.test('a slowloris upgrade (one byte every 500 ms) is cut by the runtime after 15 s without a response', async (t) => {
  const r = await within(slowUpgrade, 40_000, 'the slow upgrade to end');
  t.ok(r.closedAfterMs !== null, `the runtime closed it (after ${r.closedAfterMs} ms, ${r.sent} bytes sent)`);
  t.ok((r.closedAfterMs ?? 0) >= 14_000 && (r.closedAfterMs ?? 0) <= 20_000, 'at its 15 s header timeout');
  t.equal(r.received, '', 'no response at all: the request never reached the Worker');
});
