// The queue Durable Object in real local workerd, driven by a hand-written
// agent so every frame can be checked. Bodies in R2, as deployed (wrangler.toml);
// the chunk path has its own file (chunk-path.test.ts).
import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { MAX_CHUNK_BYTES, PROTOCOL_VERSION, type MessageFrame } from '../../protocol/wire.ts';
import { cloudflareBlock } from '../../local/email-routing.ts';
import { eightBitMessage, splitBlock, STAND_IN_BLOCK } from '../helpers/mail.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, OLD_TOKEN, postPartly, startTestWorker, type TestWorker } from '../helpers/worker.ts';

let w: TestWorker;
t.before(async () => { w = await startTestWorker({ allowedDomains: ['example.test'] }); });
t.teardown(async () => { await w.stop(); });

const hello = (credit = 8 << 20, window = 4) => ({ type: 'hello' as const, v: PROTOCOL_VERSION, agent: 'test-agent', window, credit, fetch: true });

async function connect(token: string | null = AGENT_TOKEN, credit?: number): Promise<RawAgent> {
  const a = new RawAgent(w.agentUrl(), token);
  await a.opened;
  a.send(hello(credit));
  await a.until((s) => s.some((x) => x.kind === 'frame' && x.frame.type === 'welcome'));
  return a;
}

const header = (a: RawAgent, id?: string, pick: (f: MessageFrame) => boolean = () => true) => a.until((s) => {
  for (const x of s) if (x.kind === 'frame' && x.frame.type === 'message' && (id === undefined || x.frame.id === id) && pick(x.frame)) return x.frame;
  return undefined;
});

/** Waits (a bound, not a timing goal) until nothing is queued or in flight. */
async function idle(): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const s = await w.summary();
    if ((s.queued ?? 0) + (s['in-flight'] ?? 0) === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The test's messages are acked: wait for the queue to settle, then close the agent. */
async function closeWhenIdle(a: RawAgent): Promise<void> {
  await idle();
  a.close();
  await a.closed;
}

t.test('refuses agents without the right bearer token', async (t) => {
  for (const [name, token, url] of [
    ['no token', null, w.agentUrl()],
    ['wrong token', 'agent-token-wrong-0123456789', w.agentUrl()],
    ['token in the query string', null, `${w.agentUrl()}?token=${AGENT_TOKEN}`],
  ] as const) {
    const a = new RawAgent(url, token);
    await t.rejects(a.opened, /HTTP 401/, name);
  }
  const old = await connect(OLD_TOKEN);
  t.pass('either token of a rotation is accepted');
  old.close();
  await old.closed;
});

t.test('8-bit and binary bytes go to R2 and come back byte-exact through GET /agent/body; once acked the R2 object is gone', async (t) => {
  const body = eightBitMessage(2 * MAX_CHUNK_BYTES + 12345);
  const r = await w.post('a@sender.test', 'alice@example.test', body);
  t.equal(r.status, 200);
  t.same(await w.bodyKeys(), [`queue/${String(r.body.id)}`], 'one R2 object, named after the shard and the message');
  const a = await connect();
  const m = await header(a, String(r.body.id));
  const prefix = m.prefix ?? 0;
  t.ok(prefix > 0, 'the stand-in\'s Cloudflare block was found');
  t.equal(m.size, prefix + body.length, 'size: the block and the sender\'s bytes');
  t.equal(m.sha256, undefined, 'no sha256: nothing in the object hashed the bytes');
  t.equal(m.fetch?.md5, createHash('md5').update(body).digest('hex'), 'md5: R2\'s, of the sender\'s bytes after the block');
  t.same(m.recipients, ['alice@example.test']);
  const got = await a.received(m.id);
  t.notOk(a.seen.some((s) => s.kind === 'chunk'), 'no chunk on the socket');
  t.match(got.subarray(0, prefix).toString('latin1'), STAND_IN_BLOCK, 'the block as Email Routing handed it over, first');
  t.ok(got.subarray(prefix).equals(body), 'then the sender\'s bytes, identical');
  t.equal((await w.summary())['in-flight'], 1);
  a.ackAll(m);
  await t.resolves(async () => {
    for (let i = 0; i < 50 && (await w.summary())['in-flight'] !== 0; i++) await new Promise((r) => setTimeout(r, 50));
  });
  t.same(await w.summary(), { incoming: 0, queued: 0, 'in-flight': 0, deferred: 0, hold: 0, bouncing: 0, bounced: 0, 'dead-letter': 0 });
  for (let i = 0; i < 50 && (await w.bodyKeys()).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  t.same(await w.bodyKeys(), [], 'the ack deleted the R2 object');
  a.close();
  await a.closed;
});

t.test('a retried delivery of the same message is stored once', async (t) => {
  const body = Buffer.from('Subject: twice\r\n\r\nsame bytes\r\n');
  const first = await w.post('b@sender.test', 'alice@example.test', body);
  const again = await w.post('b@sender.test', 'alice@example.test', body);
  t.equal(again.body.id, first.body.id);
  t.equal(again.body.duplicate, true);
  const other = await w.post('b@sender.test', 'bob@example.test', body);
  t.not(other.body.id, first.body.id, 'another recipient is another message');
  t.equal((await w.summary()).queued, 2);
  const a = await connect();
  for (const id of [first.body.id, other.body.id]) {
    const m = await header(a, String(id));
    await a.received(m.id);
    a.ackAll(m);
  }
  await a.until(() => true);
  await new Promise((r) => setTimeout(r, 200));
  const after = await w.post('b@sender.test', 'alice@example.test', body);
  t.equal(after.body.duplicate, true, 'still a duplicate after it was acked');
  t.equal((await w.summary()).queued, 0);
  for (let i = 0; i < 50 && (await w.bodyKeys()).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  t.same(await w.bodyKeys(), [], 'the duplicates\' R2 objects are deleted: only a message keeps one');
  a.close();
  await a.closed;
});

t.test('a sender\'s retry under a new Cloudflare block is stored once, with the bytes of the first attempt', async (t) => {
  const body = Buffer.from('Message-ID: <retry-1@sender.test>\r\nSubject: retried\r\n\r\nsame message\r\n');
  const blocks = [0, 1].map(() => cloudflareBlock('r@sender.test', 'alice@example.test'));
  t.notSame(blocks[0], blocks[1], 'two attempts, two blocks');
  const first = await w.post('r@sender.test', 'alice@example.test', Buffer.concat([blocks[0] as Buffer, body]), { block: false });
  const again = await w.post('r@sender.test', 'alice@example.test', Buffer.concat([blocks[1] as Buffer, body]), { block: false });
  t.equal(first.body.duplicate, false);
  t.equal(again.body.id, first.body.id, 'the second attempt is answered with the first one\'s id');
  t.equal(again.body.duplicate, true, 'and as a duplicate');
  t.equal((await w.summary()).queued, 1, 'one stored');
  // Control: the same Message-ID with another body is another message.
  const other = Buffer.from('Message-ID: <retry-1@sender.test>\r\nSubject: retried\r\n\r\nanother body\r\n');
  const third = await w.post('r@sender.test', 'alice@example.test', other);
  t.not(third.body.id, first.body.id);
  t.equal(third.body.duplicate, false);
  t.equal((await w.summary()).queued, 2, 'two stored');
  const a = await connect();
  const m = await header(a, String(first.body.id));
  t.ok((await a.received(m.id)).equals(Buffer.concat([blocks[0] as Buffer, body])), 'the agent gets what Email Routing handed over first, block included');
  a.ackAll(m);
  const n = await header(a, String(third.body.id));
  await a.received(n.id);
  a.ackAll(n);
  await closeWhenIdle(a);
});

t.test('without a block it can find, the key covers every byte: a changed first line is another message', async (t) => {
  const body = Buffer.from('Subject: no block\r\n\r\nbytes\r\n');
  const one = await w.post('n@sender.test', 'alice@example.test', Buffer.concat([Buffer.from('X-Attempt: 1\r\n'), body]), { block: false });
  const two = await w.post('n@sender.test', 'alice@example.test', Buffer.concat([Buffer.from('X-Attempt: 2\r\n'), body]), { block: false });
  t.not(two.body.id, one.body.id);
  t.equal(two.body.duplicate, false);
  const a = await connect();
  for (const id of [one.body.id, two.body.id]) {
    const m = await header(a, String(id));
    t.equal(m.prefix, undefined, 'no prefix on the wire');
    t.equal(m.fetch?.block, '', 'no block to put back');
    await a.received(m.id);
    a.ackAll(m);
  }
  await closeWhenIdle(a);
});

t.test('an agent that does not fetch (a v1 agent, or v2 without `fetch`) is leased no message in R2: it waits for one that does', async (t) => {
  const posted = await w.post('v@sender.test', 'alice@example.test', Buffer.from('Subject: v1\r\n\r\nx\r\n'), { block: false });
  const old = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await old.opened;
  old.send({ type: 'hello', v: 1, agent: 'old', window: 4, credit: 8 << 20 });
  const noFetch = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await noFetch.hello({ agent: 'no-fetch', window: 4, credit: 8 << 20 });
  await new Promise((r) => setTimeout(r, 300));
  for (const x of [old, noFetch]) {
    t.ok(x.frames().some((f) => f.type === 'welcome'), 'welcomed');
    t.notOk(x.frames().some((f) => f.type === 'message'), 'but given nothing');
    x.close();
    await x.closed;
  }
  t.equal((await w.summary()).queued, 1, 'the message waits, queued');
  const a = await connect();
  const n = await header(a, String(posted.body.id));
  await a.received(n.id);
  a.ackAll(n);
  await closeWhenIdle(a);
});

t.test('a lease that ends while its agent is mid-fetch: a fetch started after is refused, an answer from the old session is ignored, the message is delivered once', async (t) => {
  const body = randomBytes(3 * MAX_CHUNK_BYTES);
  const r = await w.post('c@sender.test', 'alice@example.test', body);
  const a = await connect();
  const m = await header(a, String(r.body.id));
  // The old connection's fetch: started, one read, then left hanging.
  const u = new URL(`/agent/body/${m.id}`, w.rt.url);
  const mid = await fetch(u, { headers: { Authorization: `Bearer ${AGENT_TOKEN}` } });
  t.equal(mid.status, 200, 'the fetch starts while the lease holds');
  const reader = mid.body?.getReader();
  t.ok(((await reader?.read())?.value?.byteLength ?? 0) > 0, 'and brings bytes');
  a.ws.terminate();
  await a.closed;
  for (let i = 0; i < 50 && (await w.summary()).queued !== 1; i++) await new Promise((r) => setTimeout(r, 50));
  t.equal((await w.summary()).queued, 1, 'the lease ended with the connection');
  t.equal((await a.fetchBody(m.id)).status, 404, 'a fetch that starts now is refused: the message is not in flight');
  const b = await connect();
  const again = await header(b, m.id);
  t.equal(again.attempt, 2, 'the next connection gets it');
  const got = splitBlock(await b.received(m.id));
  t.match(got.block.toString('latin1'), STAND_IN_BLOCK);
  t.ok(got.rest.equals(body), 'the block, then the sender\'s bytes');
  // The old connection's agent answers late, on a connection of its own: not its lease.
  const late = await connect();
  late.ackAll(m);
  b.ackAll(again);
  for (let i = 0; i < 50 && (await w.summary())['in-flight'] !== 0; i++) await new Promise((r) => setTimeout(r, 50));
  t.ok(w.logs.some((l) => l.includes('"event":"ack.ignored"') && l.includes(m.id)), 'the late ack was ignored');
  t.ok(w.logs.filter((l) => l.includes('"event":"message.acked"') && l.includes(m.id)).length === 1, 'one ack settled it: delivered once');
  await reader?.cancel().catch(() => undefined);
  for (const x of [b, late]) {
    x.close();
    await x.closed;
  }
});

t.test('malformed frames close the socket with 1008 and release its leases', async (t) => {
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await a.opened;
  a.send('{"type":"ack"}');
  t.equal((await a.closed).code, 1008);
  const b = await connect();
  b.send('{"type":"credit","bytes":"lots"}');
  t.equal((await b.closed).code, 1008);
  const c = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await c.opened;
  c.send({ type: 'hello', v: 99, agent: 'future', window: 1, credit: 1 });
  const closed = await c.closed;
  t.equal(closed.code, 1008);
  t.match(closed.reason, /version 99/);
});

t.test('an ack for an unknown id is ignored', async (t) => {
  const a = await connect();
  a.send({ type: 'ack', id: 'f'.repeat(32), results: [{ recipient: 'x@example.test', code: 250, enhanced: null, text: '', outcome: 'delivered' }] });
  await new Promise((r) => setTimeout(r, 200));
  t.equal(a.ws.readyState, a.ws.OPEN);
  a.close();
  await a.closed;
});

t.test('policy: other domains and oversized messages are rejected with a reason', async (t) => {
  const r = await w.post('a@sender.test', 'someone@elsewhere.test', Buffer.from('x\r\n'));
  t.equal(r.status, 550);
  t.match(String(r.body.reason), /^5\.7\.1 .*elsewhere\.test/);
  const bad = await w.post('a@sender.test', 'x\r\n@example.test', Buffer.from('x\r\n'));
  t.equal(bad.status, 550);
  t.match(String(bad.body.reason), /^5\.1\.3/);
});

t.test('a restart of workerd loses nothing: stored mail is delivered afterwards', async (t) => {
  const body = Buffer.from('Subject: survive\r\n\r\nrestart\r\n');
  const r = await w.post('d@sender.test', 'alice@example.test', body);
  await w.rt.restart();
  t.equal((await w.summary()).queued, 1);
  const a = await connect();
  const m = await header(a, String(r.body.id));
  const got = splitBlock(await a.received(m.id));
  t.match(got.block.toString('latin1'), STAND_IN_BLOCK);
  t.ok(got.rest.equals(body), 'the block, then the sender\'s bytes');
  a.ackAll(m);
  a.close();
  await a.closed;
});

t.test('a restart while a message is leased: the object, started again, finds the lease\'s connection gone and gives the message to the next agent', async (t) => {
  const body = Buffer.from('Subject: leased\r\n\r\nacross a restart\r\n');
  const r = await w.post('lease@sender.test', 'alice@example.test', body);
  const a = await connect();
  const m = await header(a, String(r.body.id));
  t.equal((await w.summary())['in-flight'], 1, 'leased to the first agent, which never answers');
  await w.rt.restart();  // its socket goes with the runtime: only the object's start can release the lease
  const b = await connect();
  const again = await header(b, m.id);
  t.ok(splitBlock(await b.received(again.id)).rest.equals(body), 'the next agent gets it, byte for byte');
  b.ackAll(again);
  await idle();
  const left = Object.entries(await w.summary()).filter(([, n]) => n !== 0);
  t.same(left, [], 'delivered once, nothing left');
  b.close();
  await b.closed;
});

t.test('an email() cut short mid-body stores nothing: no row, and its R2 put fails and is deleted', async (t) => {
  // Half a body posted, then the connection dropped: the stream into R2 breaks.
  const before = await w.summary();
  const keys = await w.bodyKeys();
  const tempfails = (): number => w.logs.filter((l) => l.includes('"event":"email.tempfail"')).length;
  const failed = tempfails();
  const req = postPartly(w, 'cut@sender.test', 'alice@example.test', 4 * MAX_CHUNK_BYTES, randomBytes(2 * MAX_CHUNK_BYTES));
  await new Promise((r) => setTimeout(r, 300));
  req.destroy();
  for (let i = 0; i < 40 && tempfails() === failed; i++) await new Promise((r) => setTimeout(r, 50));
  t.equal(tempfails(), failed + 1, 'email() failed: the sender retries');
  t.same(await w.summary(), before, 'no row');
  t.same(await w.bodyKeys(), keys, 'no R2 object left behind');
});

t.test('synchronous verdict: a permanent refusal by every recipient becomes the Worker\'s rejection', async (t) => {
  const a = await connect();
  const body = Buffer.from('Subject: verdict\r\n\r\nz\r\n');
  const post = w.post('v@sender.test', 'nobody@example.test', body);
  const m = await header(a);
  await a.received(m.id);
  a.send({ type: 'ack', id: m.id, results: [{ recipient: 'nobody@example.test', code: 550, enhanced: '5.1.1', text: "<nobody@example.test> User doesn't exist\r\nX", outcome: 'permfail' }] });
  const r = await post;
  t.equal(r.status, 550);
  t.equal(r.body.reason, "5.1.1 <nobody@example.test>: <nobody@example.test> User doesn't exist X (550 from the destination mail server)",
    'Dovecot\'s words, control characters removed');

  const post2 = w.post('v@sender.test', 'alice@example.test', body);
  const m2 = await header(a, undefined, (f) => f.id !== m.id);
  await a.received(m2.id);
  a.send({ type: 'ack', id: m2.id, results: [{ recipient: 'alice@example.test', code: 451, enhanced: '4.3.0', text: 'try later', outcome: 'tempfail' }] });
  t.equal((await post2).status, 200, 'a temporary failure is accepted: the queue retries');
  t.equal((await w.summary()).deferred, 1);
  a.close();
  await a.closed;
});

t.test('a refusal told at SMTP time is not remembered for dedupe: the same message sent again after a restart is stored, not answered with the id of a message that is gone', async (t) => {
  const a = await connect();
  const body = Buffer.from('Subject: refused, then sent again\r\n\r\nr\r\n');
  const post = w.post('r@sender.test', 'nobody@example.test', body);
  const m = await header(a, undefined, (f) => f.sender === 'r@sender.test');
  await a.received(m.id);
  a.send({ type: 'ack', id: m.id, results: [{ recipient: 'nobody@example.test', code: 550, enhanced: '5.1.1', text: "User doesn't exist", outcome: 'permfail' }] });
  t.equal((await post).status, 550, 'refused at SMTP time');
  a.close();
  await a.closed;
  // The verdicts kept in memory are gone, as after any restart or eviction.
  await w.rt.restart();
  const again = await w.post('r@sender.test', 'nobody@example.test', body);
  t.equal(again.status, 200, 'no agent to ask: accepted');
  t.not(again.body.id, m.id, 'a message of its own, not the refused one');
  t.equal((await w.summary()).queued, 1, 'stored: it will be refused again and bounced, not dropped');
  const b = await connect();
  const m2 = await header(b, String(again.body.id));
  await b.received(m2.id);
  b.ackAll(m2);
  for (let i = 0; i < 50 && (await w.summary())['in-flight'] !== 0; i++) await new Promise((r) => setTimeout(r, 50));
  b.close();
  await b.closed;
});

// Last in this file: it leaves a deferred message behind.
t.test('nack shutdown requeues at once; nack corrupt defers with backoff, never a tight loop', async (t) => {
  const a = await connect();
  const posted = await w.post('n@sender.test', 'alice@example.test', Buffer.from('Subject: nack\r\n\r\nx\r\n'));
  const m = await header(a, String(posted.body.id));
  await a.received(m.id);
  a.send({ type: 'nack', id: m.id, reason: 'corrupt', text: 'SHA-256 mismatch' });
  await t.resolves(async () => {
    for (let i = 0; i < 50 && (await w.summary()).deferred !== 2; i++) await new Promise((r) => setTimeout(r, 50));
  });
  t.match(await w.summary(), { queued: 0, 'in-flight': 0, deferred: 2 }, 'deferred (with the one from the test before), not offered again now');
  t.equal(a.frames().filter((f) => f.type === 'message' && f.id === m.id).length, 1, 'sent once');

  const posted2 = await w.post('n@sender.test', 'bob@example.test', Buffer.from('Subject: nack 2\r\n\r\ny\r\n'));
  const m2 = await header(a, String(posted2.body.id));
  await a.received(m2.id);
  a.send({ type: 'nack', id: m2.id, reason: 'shutdown', text: 'agent stopping' });
  await t.resolves(async () => {
    for (let i = 0; i < 50 && (await w.summary()).queued !== 1; i++) await new Promise((r) => setTimeout(r, 50));
  });
  t.match(await w.summary(), { queued: 1, 'in-flight': 0 }, 'queued again, not leased to the draining connection');
  a.close();
  await a.closed;
  const b = await connect();
  const again = await header(b, m2.id);
  t.equal(again.attempt, 2, 'the next connection gets it');
  await b.received(m2.id);
  b.ackAll(again);
  b.close();
  await b.closed;
});
