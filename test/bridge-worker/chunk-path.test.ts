// The chunk path, kept for two cases only: a Worker deployed without the BODIES bucket
// (bodies go into the object's SQLite, 1 MiB a row, pumped to the agent against credit), and
// messages such a Worker stored before the bucket was bound (an upgrade with a queue).
import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { MAX_CHUNK_BYTES, PROTOCOL_VERSION, type MessageFrame } from '../../protocol/wire.ts';
import { eightBitMessage, splitBlock, STAND_IN_BLOCK } from '../helpers/mail.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, postPartly, startTestWorker, type TestWorker } from '../helpers/worker.ts';

let w: TestWorker;
t.before(async () => { w = await startTestWorker({ allowedDomains: ['example.test'], bodies: false }); });
t.teardown(async () => { await w.stop(); });

/** The agent of today: it says `fetch`, and still takes messages in chunks. */
const hello = (credit = 8 << 20, window = 4) => ({ type: 'hello' as const, v: PROTOCOL_VERSION, agent: 'test-agent', window, credit, fetch: true });

async function connect(credit?: number, on: TestWorker = w): Promise<RawAgent> {
  const a = new RawAgent(on.agentUrl(), AGENT_TOKEN);
  await a.opened;
  a.send(hello(credit));
  await a.until((s) => s.some((x) => x.kind === 'frame' && x.frame.type === 'welcome'));
  return a;
}

const header = (a: RawAgent, id: string) => a.until((s) => {
  for (const x of s) if (x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === id) return x.frame;
  return undefined;
});

async function settled(on: TestWorker): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const s = await on.summary();
    if ((s.queued ?? 0) + (s['in-flight'] ?? 0) === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

t.test('without BODIES: 8-bit and binary bytes arrive byte-exact in chunks of at most 1 MiB; one warning names the missing binding', async (t) => {
  const body = eightBitMessage(2 * MAX_CHUNK_BYTES + 12345);
  const r = await w.post('a@sender.test', 'alice@example.test', body);
  t.equal(r.status, 200);
  const second = await w.post('a@sender.test', 'alice@example.test', Buffer.from('Subject: second\r\n\r\nx\r\n'));
  const warnings = w.logs.filter((l) => l.includes('"event":"bodies.unbound"'));
  t.equal(warnings.length, 1, 'one warning, not one per message');
  t.match(warnings[0], /"level":"warning".*BODIES/, 'a warning that names the binding');
  const a = await connect();
  const m = await header(a, String(r.body.id));
  const prefix = m.prefix ?? 0;
  t.ok(prefix > 0, 'the stand-in\'s Cloudflare block was found');
  t.equal(m.size, prefix + body.length, 'size: the block and the sender\'s bytes');
  t.equal(m.sha256, createHash('sha256').update(body).digest('hex'), 'sha256: the sender\'s bytes, after the block');
  t.equal(m.fetch, undefined, 'nothing to fetch');
  const got = await a.received(m.id);
  const chunks = a.seen.filter((s) => s.kind === 'chunk');
  t.ok(chunks.length >= 3 && chunks.every((c) => c.kind === 'chunk' && c.data.length <= MAX_CHUNK_BYTES), 'in chunks, none over 1 MiB');
  t.match(got.subarray(0, prefix).toString('latin1'), STAND_IN_BLOCK, 'the block as Email Routing handed it over, first');
  t.ok(got.subarray(prefix).equals(body), 'then the sender\'s bytes, identical');
  a.ackAll(m);
  const m2 = await header(a, String(second.body.id));
  await a.received(m2.id);
  a.ackAll(m2);
  await settled(w);
  t.match(await w.summary(), { queued: 0, 'in-flight': 0 });
  a.close();
  await a.closed;
});

t.test('without BODIES: a socket dropped mid-message gives the message to the next connection; credit holds back the rest', async (t) => {
  const body = randomBytes(3 * MAX_CHUNK_BYTES);
  const r = await w.post('c@sender.test', 'alice@example.test', body);
  const a = await connect(1); // 1 byte of credit: one chunk, then it waits
  const m = await header(a, String(r.body.id));
  await a.until((s) => s.some((x) => x.kind === 'chunk'));
  await new Promise((r) => setTimeout(r, 200));
  t.equal(a.seen.filter((s) => s.kind === 'chunk').length, 1, 'credit holds back the rest');
  a.ws.terminate();
  await a.closed;
  const b = await connect();
  const again = await header(b, m.id);
  t.equal(again.attempt, 2);
  const got = splitBlock(await b.received(m.id));
  t.match(got.block.toString('latin1'), STAND_IN_BLOCK);
  t.ok(got.rest.equals(body), 'the block, then the sender\'s bytes');
  b.ackAll(again);
  await settled(w);
  b.close();
  await b.closed;
});

t.test('without BODIES: the object holds at most 8 MiB of an agent\'s credit; what one invocation\'s 4 MiB budget leaves follows in an alarm', async (t) => {
  const MiB = 1 << 20;
  const bodies = [randomBytes(12 * MiB), randomBytes(12 * MiB)];
  const posted = [];
  for (const [i, body] of bodies.entries()) posted.push(await w.post(`greedy${i}@sender.test`, 'alice@example.test', body));
  // Two agents that grant all the wire allows (64 MiB) and never give any back.
  const agents = [await connect(64 * MiB), await connect(64 * MiB)];
  const sent = (a: RawAgent): number => a.seen.reduce((n, x) => n + (x.kind === 'chunk' ? x.data.length : 0), 0);
  const frames = await Promise.all(agents.map((a) => a.until((s) => {
    for (const x of s) if (x.kind === 'frame' && x.frame.type === 'message') return x.frame;
    return undefined;
  })));
  // Each has its message; the object sends 8 MiB of each (its cap, plus at most the chunk that crossed it), then waits for credit.
  for (const a of agents) await a.until((s) => s.filter((x) => x.kind === 'chunk').length >= 8 || undefined);
  await new Promise((r) => setTimeout(r, 500));
  for (const [i, a] of agents.entries()) {
    t.ok(sent(a) >= 8 * MiB && sent(a) < 9 * MiB, `agent ${i}: ${sent(a)} bytes sent against 64 MiB granted: held to 8 MiB`);
  }
  // Credit back (as the real agent grants after reading): the rest of both messages comes.
  for (const a of agents) a.send({ type: 'credit', bytes: 8 * MiB });
  for (const [i, a] of agents.entries()) {
    const m = frames[i] as MessageFrame;
    const got = splitBlock(await a.received(m.id));
    const which = posted.findIndex((p) => String(p.body.id) === m.id);
    t.ok(got.rest.equals(bodies[which] ?? Buffer.alloc(0)), `agent ${i}: the whole message, byte-exact`);
    a.ackAll(m);
  }
  await settled(w);
  for (const a of agents) { a.close(); await a.closed; }
});

t.test('a v1 agent is leased only messages whose sha256 covers every byte', async (t) => {
  const plain = await w.post('v@sender.test', 'alice@example.test', Buffer.from('Subject: v1\r\n\r\nx\r\n'), { block: false });
  const blocked = await w.post('v@sender.test', 'alice@example.test', Buffer.from('Subject: v1 blocked\r\n\r\nx\r\n'));
  const old = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await old.opened;
  old.send({ type: 'hello', v: 1, agent: 'test-agent', window: 4, credit: 8 << 20 });
  const m = await header(old, String(plain.body.id));
  await old.received(m.id);
  old.ackAll(m);
  await new Promise((r) => setTimeout(r, 300));
  t.notOk(old.seen.some((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === blocked.body.id), 'the v1 agent never gets the message with a block');
  old.close();
  await old.closed;
  const a = await connect();
  const n = await header(a, String(blocked.body.id));
  await a.received(n.id);
  a.ackAll(n);
  await settled(w);
  a.close();
  await a.closed;
});

t.test('an ingest cut short by a restart leaves no incoming row: the next instance removes it at start', async (t) => {
  // Half a body posted, the rest never sent: the row stays incoming until workerd goes away.
  const req = postPartly(w, 'cut@sender.test', 'alice@example.test', 4 * MAX_CHUNK_BYTES, randomBytes(2 * MAX_CHUNK_BYTES));  // the restart cuts it
  for (let i = 0; i < 200 && (await w.summary()).incoming !== 1; i++) await new Promise((r) => setTimeout(r, 25));
  t.equal((await w.summary()).incoming, 1, 'mid-ingest: one incoming row');
  await w.rt.restart();
  req.destroy();
  t.equal((await w.summary()).incoming, 0, 'gone after the restart, not an hour later');
});

t.test('an upgrade with a queue: messages stored in chunks before BODIES was bound are delivered from their chunks after; new mail goes to R2', async (t) => {
  const up = await startTestWorker({ bodies: false });
  t.teardown(() => up.stop());
  const old = Buffer.concat([Buffer.from('Subject: stored before the upgrade\r\n\r\n'), randomBytes(MAX_CHUNK_BYTES + 7), Buffer.from('\r\n')]);
  const before = await up.post('u@sender.test', 'alice@example.test', old);
  t.equal(before.status, 200);
  // The deploy that binds the bucket: same storage, new binding, the code that uses it.
  await up.rt.restart({ bodies: true });
  t.same(await up.bodyKeys(), [], 'the old message is not moved: it stays in its chunks');
  const fresh = Buffer.from('Subject: stored after the upgrade\r\n\r\nnew\r\n');
  const after = await up.post('u@sender.test', 'alice@example.test', fresh);
  t.same(await up.bodyKeys(), [`queue/${String(after.body.id)}`], 'new mail goes to R2');
  const a = await connect(undefined, up);
  const m = await header(a, String(before.body.id));
  t.ok(m.sha256 !== undefined && m.fetch === undefined, 'the old one comes in chunks');
  t.ok(splitBlock(await a.received(m.id)).rest.equals(old), 'byte for byte');
  a.ackAll(m);
  const n = await header(a, String(after.body.id));
  t.ok(n.fetch !== undefined && n.sha256 === undefined, 'the new one is fetched');
  t.ok(splitBlock(await a.received(n.id)).rest.equals(fresh), 'byte for byte');
  a.ackAll(n);
  await settled(up);
  t.match(await up.summary(), { queued: 0, 'in-flight': 0, deferred: 0 }, 'both delivered');
  for (let i = 0; i < 50 && (await up.bodyKeys()).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  t.same(await up.bodyKeys(), [], 'and the R2 object deleted');
  a.close();
  await a.closed;
});

t.test('without BODIES: 25 MiB streams through a credit of 2 MiB, granted back as it goes, byte-exact in chunks of at most 1 MiB', async (t) => {
  const LIMIT = 25 * 1024 * 1024;
  const body = Buffer.concat([Buffer.from('Subject: big\r\n\r\n'), randomBytes(LIMIT - 16)]);
  const posted = await w.post('s@sender.test', 'alice@example.test', body);
  t.equal(posted.status, 200);
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  t.teardown(() => a.close());
  await a.opened;
  // A small credit: the object must stream 25 MiB through it, granted back as we go.
  a.send({ type: 'hello', v: PROTOCOL_VERSION, agent: 'big', window: 1, credit: 2 * MAX_CHUNK_BYTES, fetch: true });
  const id = String(posted.body.id);
  let granted = 0;
  const acked = new Set<string>();
  const m = await a.until((seen) => {
    // The earlier test's message comes first (window 1): ack it to make room.
    for (const s of seen) {
      if (s.kind !== 'frame' || s.frame.type !== 'message' || s.frame.id === id || acked.has(s.frame.id)) continue;
      const f = s.frame;
      if (!seen.some((e) => e.kind === 'frame' && e.frame.type === 'end' && e.frame.id === f.id)) continue;
      acked.add(f.id);
      a.send({ type: 'ack', id: f.id, results: f.recipients.map((recipient) => ({ recipient, code: 250, enhanced: '2.0.0', text: 'ok', outcome: 'delivered' as const })) });
    }
    const got = seen.filter((s) => s.kind === 'chunk').reduce((n, s) => n + (s.kind === 'chunk' ? s.data.length : 0), 0);
    if (got - granted >= MAX_CHUNK_BYTES) {
      a.send({ type: 'credit', bytes: got - granted });
      granted = got;
    }
    const end = seen.some((s) => s.kind === 'frame' && s.frame.type === 'end' && s.frame.id === id);
    const head = seen.find((s) => s.kind === 'frame' && s.frame.type === 'message' && s.frame.id === id);
    return end && head?.kind === 'frame' ? (head.frame as MessageFrame) : undefined;
  }, 60_000);
  const { block, rest: out } = splitBlock(a.bytesOf(id));
  t.match(block.toString('latin1'), STAND_IN_BLOCK);
  t.equal(m.size, block.length + LIMIT);
  t.equal(m.prefix, block.length);
  t.equal(out.length, LIMIT);
  t.equal(createHash('sha256').update(out).digest('hex'), createHash('sha256').update(body).digest('hex'), 'byte-exact');
  t.equal(m.sha256, createHash('sha256').update(body).digest('hex'));
  t.ok(a.seen.every((s) => s.kind !== 'chunk' || s.data.length <= MAX_CHUNK_BYTES), 'chunks of at most 1 MiB');
  a.ackAll(m);
  await settled(w);
});

t.test('an ack before the end frame of a message in chunks: 1008, and the message is queued again', async (t) => {
  const posted = await w.post('s@sender.test', 'alice@example.test', Buffer.concat([Buffer.from('Subject: early\r\n\r\n'), randomBytes(MAX_CHUNK_BYTES + 10)]));
  const id = String(posted.body.id);
  const slow = await connect(1);  // credit for one chunk: the message is still being streamed
  const m = await header(slow, id);
  await slow.until((s) => s.some((x) => x.kind === 'chunk'));
  slow.ackAll(m);
  t.same(await slow.closed, { code: 1008, reason: 'ack before end of message' });
  for (let i = 0; i < 50 && (await w.summary()).queued !== 1; i++) await new Promise((r) => setTimeout(r, 50));
  t.match(await w.summary(), { queued: 1, 'in-flight': 0 }, 'not settled by it: queued again');
  const next = await connect();
  const again = await header(next, id);
  t.equal(again.attempt, m.attempt + 1);
  await next.received(id);
  next.ackAll(again);
  await settled(w);
  next.close();
  await next.closed;
});
