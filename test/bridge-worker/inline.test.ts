// Small bodies inline (issue #24): with the BODIES bucket bound, a message of at most
// INLINE_MAX_BYTES (Cloudflare's block included) is kept in the queue object's chunk rows and
// sent on the agent's WebSocket: no R2 put, no body fetch. A larger one goes to R2. A sender's
// retry whose new block moves it across the threshold is still one message (the dedupe key's
// digest is the body's MD5 on both paths).
import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { parseConfig } from '../../bridge-worker/config.ts';
import { cloudflareBlock } from '../../local/email-routing.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const FROM = 's@example.net';
const TO = 'alice@example.test';
/** A message of `n` bytes: a header, then printable filler (a fresh one each call). */
const message = (n: number): Buffer => {
  const head = Buffer.from(`Subject: inline ${randomBytes(4).toString('hex')}\r\n\r\n`);
  return Buffer.concat([head, Buffer.from(randomBytes(n).toString('base64').slice(0, n - head.length))]);
};
const blockLength = (clientHost = 'localhost'): number => cloudflareBlock(FROM, TO, { clientHost }).length;

async function connect(w: TestWorker): Promise<RawAgent> {
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await a.hello({ agent: 'inline-test', window: 4, credit: 8 << 20, fetch: true });
  return a;
}
async function drained(w: TestWorker): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    const s = await w.summary();
    if (Object.values(s).every((n) => n === 0)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

t.test('INLINE_MAX_BYTES: 128 KiB by default, 0 to 256 KiB, anything else refused by name', async (t) => {
  t.equal(parseConfig({}).inlineMaxBytes, 128 * 1024);
  t.equal(parseConfig({ INLINE_MAX_BYTES: '0' }).inlineMaxBytes, 0, '0: every body to R2');
  t.equal(parseConfig({ INLINE_MAX_BYTES: '262144' }).inlineMaxBytes, 262144);
  for (const bad of ['262145', '-1', '1.5', 'big']) t.throws(() => parseConfig({ INLINE_MAX_BYTES: bad }), /INLINE_MAX_BYTES: must be an integer from 0 to 262144/, bad);
});

t.test('a small message stays in the object and rides the WebSocket; one byte over the threshold goes to R2', async (t) => {
  const body = message(10 * 1024);
  const limit = body.length + blockLength();
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { INLINE_MAX_BYTES: String(limit) } });
  t.teardown(() => w.stop());
  const a = await connect(w);
  t.teardown(() => a.close());

  const small = String((await w.post(FROM, TO, body)).body.id);
  t.same(await w.bodyKeys(), [], 'at the threshold exactly: no R2 put');
  const got = await a.received(small);
  const frame = a.messageFrame(small);
  t.equal(frame?.fetch, undefined, 'no body to fetch');
  t.equal(frame?.size, limit);
  t.equal(got.subarray(got.length - body.length).toString('hex'), body.toString('hex'), 'the message byte for byte after the block');
  t.equal(frame?.sha256, createHash('sha256').update(got.subarray(frame?.prefix ?? 0)).digest('hex'), 'its sha256 as the agent checks it');
  if (frame) a.ackAll(frame);

  const over = Buffer.concat([body.subarray(0, body.length - 1), Buffer.from('xy')]);
  const large = String((await w.post(FROM, TO, over)).body.id);
  t.same(await w.bodyKeys(), [`queue/${large}`], 'one byte over: in R2');
  await a.received(large);
  const f2 = a.messageFrame(large);
  t.ok(f2?.fetch, 'fetched from R2');
  if (f2) a.ackAll(f2);
  t.ok(await drained(w), 'both delivered, nothing left');
  t.same(await w.bodyKeys(), [], 'and the R2 object deleted after its ack');
});

t.test("a sender's retry under a new block that moves it across the threshold is one message, both ways", async (t) => {
  const body = message(4 * 1024);
  const short = 'a.example';
  const long = `${'relay-'.repeat(20)}b.example`;
  t.ok(blockLength(long) > blockLength(short), 'the long client name makes a longer block');
  const limit = body.length + blockLength(short);
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { INLINE_MAX_BYTES: String(limit) } });
  t.teardown(() => w.stop());

  const first = await w.post(FROM, TO, body, { block: { clientHost: short } });
  t.match(first, { status: 200, body: { duplicate: false } });
  t.same(await w.bodyKeys(), [], 'the first attempt inline');
  const retry = await w.post(FROM, TO, body, { block: { clientHost: long } });
  t.match(retry, { status: 200, body: { id: first.body.id, duplicate: true } }, 'the retry through R2: a duplicate of the inline copy');
  t.same(await w.bodyKeys(), [], 'its R2 object deleted');

  const other = message(4 * 1024);
  const viaR2 = await w.post(FROM, TO, other, { block: { clientHost: long } });
  t.match(viaR2, { status: 200, body: { duplicate: false } });
  t.same(await w.bodyKeys(), [`queue/${String(viaR2.body.id)}`], 'another message, its first attempt through R2');
  const back = await w.post(FROM, TO, other, { block: { clientHost: short } });
  t.match(back, { status: 200, body: { id: viaR2.body.id, duplicate: true } }, 'its retry inline: a duplicate of the copy in R2');

  const a = await connect(w);
  t.teardown(() => a.close());
  for (const id of [String(first.body.id), String(viaR2.body.id)]) {
    await a.received(id);
    const f = a.messageFrame(id);
    if (f) a.ackAll(f);
  }
  t.ok(await drained(w), 'two messages delivered, once each');
  t.equal(a.frames().filter((f) => f.type === 'message').length, 2, 'two leases in all');
});
