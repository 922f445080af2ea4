// email() policy in real workerd: recipient lists, the 25 MiB limit at its exact
// edge, and a 25 MiB message through R2 and back out byte-exact.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { MAX_BLOCK_BYTES } from '../../bridge-worker/cloudflare-block.ts';
import { MAX_CHUNK_BYTES, type MessageFrame } from '../../protocol/wire.ts';
import { STAND_IN_BLOCK, splitBlock } from '../helpers/mail.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const LIMIT = 25 * 1024 * 1024;
let w: TestWorker;
t.before(async () => {
  w = await startTestWorker({ allowedDomains: ['example.test'], vars: { ALLOWED_RECIPIENTS: 'alice@example.test,Bob@Example.test' } });
});
t.teardown(() => w.stop());

t.test('ALLOWED_RECIPIENTS: others in an allowed domain get 5.1.1; case does not matter', async (t) => {
  const body = Buffer.from('Subject: r\r\n\r\nx\r\n');
  const nobody = await w.post('s@sender.test', 'carol@example.test', body);
  t.equal(nobody.status, 550);
  t.equal(nobody.body.reason, '5.1.1 No such recipient here');
  t.equal((await w.post('s@sender.test', 'BOB@example.test', body)).status, 200);
  t.equal((await w.post('s@sender.test', 'x@elsewhere.test', body)).body.reason,
    '5.7.1 Relaying denied: this server does not accept mail for elsewhere.test', 'the domain check comes first');
});

t.test('25 MiB exactly is accepted and comes out of storage byte-exact; one byte more is refused', async (t) => {
  // The limit is the sender's message's: Cloudflare's block comes on top of it.
  const over = await w.post('s@sender.test', 'alice@example.test', Buffer.alloc(LIMIT + 1, 0x41));
  t.equal(over.status, 550);
  t.match(String(over.body.reason), /^5\.3\.4 Message size exceeds the limit of 26214400 bytes/, 'refused once the block is known');
  const far = await w.post('s@sender.test', 'alice@example.test', Buffer.alloc(LIMIT + MAX_BLOCK_BYTES + 1, 0x41), { block: false });
  t.match(String(far.body.reason), /^5\.3\.4 Message size 26222593 exceeds the limit of 26214400 bytes/, 'over the limit and any block: refused before reading');

  const body = Buffer.concat([Buffer.from('Subject: big\r\n\r\n'), randomBytes(LIMIT - 16)]);
  t.equal(body.length, LIMIT);
  const posted = await w.post('s@sender.test', 'alice@example.test', body);
  t.equal(posted.status, 200);
  const id = String(posted.body.id);
  t.ok((await w.bodyKeys()).includes(`queue/${id}`), 'its body is in R2; the refused ones left nothing there');
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  t.teardown(() => a.close());
  await a.hello({ agent: 'big', window: 1, credit: MAX_CHUNK_BYTES, fetch: true });
  // The earlier test's message comes first (window 1): ack it to make room.
  const first = await a.until((seen) => seen.find((s) => s.kind === 'frame' && s.frame.type === 'message'));
  if (first.kind === 'frame' && first.frame.type === 'message' && first.frame.id !== id) {
    const f = first.frame;
    a.send({ type: 'ack', id: f.id, results: f.recipients.map((recipient) => ({ recipient, code: 250, enhanced: '2.0.0', text: 'ok', outcome: 'delivered' as const })) });
  }
  const { block, rest: out } = splitBlock(await a.received(id, 60_000));
  const m = a.messageFrame(id) as MessageFrame;
  t.match(block.toString('latin1'), STAND_IN_BLOCK);
  t.equal(m.size, block.length + LIMIT);
  t.equal(m.prefix, block.length);
  t.equal(out.length, LIMIT);
  t.equal(createHash('sha256').update(out).digest('hex'), createHash('sha256').update(body).digest('hex'), 'byte-exact');
  t.equal(m.fetch?.md5, createHash('md5').update(body).digest('hex'), 'R2\'s MD5 of it');
  t.notOk(a.seen.some((s) => s.kind === 'chunk'), 'not a byte on the socket');
});
