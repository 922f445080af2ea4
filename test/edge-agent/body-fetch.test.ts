// The agent's fetch of a body in R2 (edge-agent/session/body-fetch.ts) against a scripted object
// that serves GET /agent/body/<id> as each test scripts it, and an LMTP peer that keeps what
// it stored. Whatever goes wrong with the fetch (a status, a cut, a stall, a drip past the
// deadline, a wrong length or MD5), the LMTP client never sends the final dot, nothing is
// stored, and the message is nacked: the object retries it with its normal backoff.
import t, { type Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, type Agent } from '../../edge-agent/agent.ts';
import { bodyUrl, FETCH_LIMITS, type FetchLimits } from '../../edge-agent/session/body-fetch.ts';
import { validateConfig } from '../../edge-agent/agent-config.ts';
import { startLmtpPeer } from './lmtp-peer.ts';
import { fetchHeader, msgId, scriptedObject, serveWhole, TOKEN, type BodyServer } from './scripted-object.ts';

const block = Buffer.from('Received: from x (127.0.0.1)\r\n        by cloudflare-email.com (unknown) id abcdefghijkl\r\n');
/** A body of every byte value, long enough to stream in many reads; it ends in CRLF (else LMTP framing adds one). */
function bodyOf(n: number): Buffer {
  const head = Buffer.from('Subject: fetched\r\nContent-Transfer-Encoding: 8bit\r\n\r\n');
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >> 9)) & 0xff;
  b.write('\r\n', n - 2, 'latin1');
  return Buffer.concat([head, b]);
}

async function setup(t: Test, limits?: FetchLimits) {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-fetch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const peer = await startLmtpPeer('store');
  t.teardown(() => peer.close());
  const object = await scriptedObject(t);
  const events: { event: string; [k: string]: unknown }[] = [];
  const agents: Agent[] = [];
  t.teardown(async () => { for (const a of agents) await a.stop(2000); });
  const agent = (): Agent => {
    const cfg = validateConfig({ workerUrl: object.url, token: TOKEN, target: peer.url, name: 'fetcher', heartbeatMs: 1000, traceHeader: false });
    const a = startAgent(cfg, join(dir, 'state'), (event, fields = {}) => { events.push({ event, ...fields }); }, limits ? { fetchLimits: limits } : {});
    agents.push(a);
    return a;
  };
  const conn = object.connection();
  agent();
  return { object, peer, events, c: await conn };
}

t.test('the body URL: the session\'s host and shard, over http(s)', async (t) => {
  t.equal(bodyUrl('wss://relay.example.com/agent?shard=3', msgId(1)), `https://relay.example.com/agent/body/${msgId(1)}?shard=3`);
  t.equal(bodyUrl('ws://127.0.0.1:8787/agent', msgId(2)), `http://127.0.0.1:8787/agent/body/${msgId(2)}`);
  t.ok(FETCH_LIMITS.idleMs >= 30_000 && FETCH_LIMITS.deadlineMs >= FETCH_LIMITS.idleMs, 'the defaults only catch dead fetches');
});

t.test('a fetched body is delivered byte for byte, Cloudflare\'s block first, and acked', async (t) => {
  const { object, peer, c } = await setup(t);
  t.equal(c.hello?.fetch, true, 'the hello says the agent fetches');
  t.equal(c.hello?.fetchSession, true, 'and names its session on each fetch');
  const id = msgId(10);
  const body = bodyOf(3 * 1024 * 1024 + 17);  // more than FETCH_AHEAD_BYTES: the fetch waits for LMTP
  object.bodies.set(id, serveWhole(body));
  c.ws.send(JSON.stringify(fetchHeader(id, block, body, ['alice@example.test'])));
  t.match(await c.next('ack'), { type: 'ack', id, results: [{ recipient: 'alice@example.test', outcome: 'delivered' }] });
  const got = peer.stored[0] ?? Buffer.alloc(0);
  const all = Buffer.concat([block, body]);
  t.ok(got.subarray(got.length - all.length).equals(all), 'the block, then the body, byte for byte');
  t.match(got.subarray(0, got.length - all.length).toString('latin1'), /^Authentication-Results: [^]*\r\n$/, 'after our Authentication-Results only');
  t.same(object.fetches, [{ id, shard: null, authorized: true, session: c.session }], 'one fetch, with the agent\'s token and the session of its welcome');
  t.equal(c.log.filter((f) => f.type === 'credit').length, 0, 'no credit spent on it');
});

/** Sends a fetched message whose body is served by `serve`; waits for the nack. */
async function failing(t: Test, serve: (body: Buffer) => BodyServer, limits?: FetchLimits, n = 1024 * 1024) {
  const env = await setup(t, limits);
  const id = msgId(20);
  const body = bodyOf(n);
  env.object.bodies.set(id, serve(body));
  env.c.ws.send(JSON.stringify(fetchHeader(id, block, body, ['alice@example.test'])));
  const nack = await env.c.next('nack');
  return { ...env, id, nack };
}

function nothingStored(t: Test, env: { peer: { stored: Buffer[] }; c: { log: { type: string }[] } }): void {
  t.same(env.peer.stored, [], 'nothing stored: the LMTP client never sent the final dot');
  t.equal(env.c.log.filter((f) => f.type === 'ack').length, 0, 'no ack');
}

t.test('HTTP 404 (the lease ended, or no such message): nacked, nothing stored', async (t) => {
  const env = await failing(t, () => (res) => res.writeHead(404).end('no such message in flight'));
  t.match(env.nack, { type: 'nack', id: env.id, reason: 'corrupt', text: /body fetch: HTTP 404/ });
  nothingStored(t, env);
});

t.test('a body cut short (the connection dropped mid-body): nacked, the DATA aborted, nothing stored', async (t) => {
  const env = await failing(t, (body) => (res, req) => {
    res.writeHead(200, { 'Content-Length': String(body.byteLength) });
    res.write(body.subarray(0, body.byteLength >> 1), () => setTimeout(() => req.socket.destroy(), 100));
  });
  t.match(env.nack, { reason: 'corrupt', text: /body fetch: / });
  t.ok(env.peer.dataBytes > 0, 'the body was streaming into the LMTP DATA');
  nothingStored(t, env);
});

t.test('a changed byte: the MD5 does not match, nacked, nothing stored', async (t) => {
  const env = await failing(t, (body) => {
    const bad = Buffer.from(body);
    bad[bad.length - 5] = (bad[bad.length - 5] ?? 0) ^ 1;
    return serveWhole(bad);
  });
  t.match(env.nack, { reason: 'corrupt', text: /MD5 mismatch/ });
  t.ok(env.peer.dataBytes > 0, 'the body was streaming into the LMTP DATA');
  nothingStored(t, env);
});

t.test('more bytes than the frame announced, or fewer: nacked, nothing stored', async (t) => {
  const more = await failing(t, (body) => serveWhole(Buffer.concat([body, Buffer.from('X\r\n')])));
  t.match(more.nack, { reason: 'corrupt', text: /more than the announced/ });
  nothingStored(t, more);
  const fewer = await failing(t, (body) => serveWhole(body.subarray(0, body.length - 2)));
  t.match(fewer.nack, { reason: 'corrupt', text: /header announced/ });
  nothingStored(t, fewer);
});

t.test('a fetch that stalls (no byte for the idle time) is given up: nacked, nothing stored', async (t) => {
  const started = Date.now();
  const env = await failing(t, (body) => (res) => {
    res.writeHead(200, { 'Content-Length': String(body.byteLength) });
    res.write(body.subarray(0, 1000));  // then nothing, the connection kept open
  }, { idleMs: 400, deadlineMs: 60_000 });
  t.match(env.nack, { reason: 'corrupt', text: /body fetch: nothing from the Worker for 400 ms/ });
  t.ok(Date.now() - started < 10_000, 'long before the deadline');
  nothingStored(t, env);
});

t.test('a fetch whose answer never starts is given up after the idle time too', async (t) => {
  const env = await failing(t, () => () => { /* headers never sent */ }, { idleMs: 400, deadlineMs: 60_000 });
  t.match(env.nack, { reason: 'corrupt', text: /nothing from the Worker for 400 ms/ });
  nothingStored(t, env);
});

t.test('a fetch that trickles past its deadline is given up: nacked, nothing stored', async (t) => {
  const env = await failing(t, (body) => (res) => {
    res.writeHead(200, { 'Content-Length': String(body.byteLength) });
    let at = 0;
    // A byte every 50 ms: never idle for 400 ms, never done within 1 s.
    const timer = setInterval(() => {
      if (res.destroyed || at >= body.byteLength) return clearInterval(timer);
      res.write(body.subarray(at, at + 1));
      at++;
    }, 50);
    res.on('close', () => clearInterval(timer));
  }, { idleMs: 400, deadlineMs: 1000 }, 2000);
  t.match(env.nack, { reason: 'corrupt', text: /body fetch: not complete within 1000 ms/ });
  nothingStored(t, env);
});

t.test('the object retries a nacked message: the next attempt, fetched whole, is delivered once', async (t) => {
  const env = await failing(t, () => (res) => res.writeHead(503).end());
  nothingStored(t, env);
  const body = bodyOf(200_000);
  env.object.bodies.set(env.id, serveWhole(body));
  env.c.ws.send(JSON.stringify(fetchHeader(env.id, block, body, ['alice@example.test'], 2)));
  t.match(await env.c.next('ack'), { id: env.id, results: [{ outcome: 'delivered' }] });
  t.equal(env.peer.stored.length, 1, 'stored once');
});

t.test('a redelivered message the journal already answers is acked without fetching its body', async (t) => {
  const { object, peer, c } = await setup(t);
  const id = msgId(30);
  const body = bodyOf(50_000);
  object.bodies.set(id, serveWhole(body));
  c.ws.send(JSON.stringify(fetchHeader(id, block, body, ['alice@example.test'])));
  await c.next('ack');
  t.equal(object.fetches.length, 1);
  // The ack was "lost": the object leases it again; the journal knows the answer.
  c.ws.send(JSON.stringify(fetchHeader(id, block, body, ['alice@example.test'], 2)));
  t.match(await c.next('ack'), { id, results: [{ outcome: 'delivered' }] });
  t.equal(peer.stored.length, 1, 'not delivered twice');
  t.ok(object.fetches.length <= 2, 'at most one more fetch, stopped once the journal answered');
});

t.test('the connection closes mid-fetch: the fetch stops and nothing is stored or acked', async (t) => {
  const { object, peer, c, events } = await setup(t);
  const id = msgId(40);
  const body = bodyOf(1024 * 1024);
  object.bodies.set(id, (res) => {
    res.writeHead(200, { 'Content-Length': String(body.byteLength) });
    res.write(body.subarray(0, 4096), () => c.ws.terminate());  // the lease ends with the socket
  });
  c.ws.send(JSON.stringify(fetchHeader(id, block, body, ['alice@example.test'])));
  for (let i = 0; i < 100 && !events.some((e) => e.event === 'deliver.disconnected'); i++) await new Promise((r) => setTimeout(r, 50));
  t.ok(events.some((e) => e.event === 'deliver.disconnected' && e.id === id), 'settled as disconnected');
  t.same(peer.stored, [], 'nothing stored');
});
