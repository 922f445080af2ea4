// K deliveries in parallel, acked in the order they finish (not the order they came):
// the scripted LMTP peer holds every final reply until the test releases it.
import t from 'tap';
import { metric, inProcess, until } from './in-process.ts';
import { header, msgId, push } from './scripted-object.ts';

const K = 4;
const bodyOf = (i: number): Buffer => Buffer.from(`Subject: message ${i}\r\n\r\nbody of message ${i}\r\n.leading dot\r\n`, 'latin1');

t.test(`${K} messages are in flight at once against a slow target; acks come in the order deliveries finish`, async (t) => {
  const { peer, object, agent } = await inProcess(t, 'hold');
  const conn = object.connection();
  const a = agent({ concurrency: K });
  const c = await conn;
  for (let i = 0; i < K; i++) push(c, header(msgId(i), bodyOf(i), [`user${i}@example.test`]), bodyOf(i), 7);

  // Every message reached its final dot and waits for Dovecot's answer at the same time.
  await until(`${K} held deliveries`, () => peer.held.length === K);
  t.equal(metric(a.metrics.render(), 'mailbridge_agent_in_flight'), K, 'in-flight gauge');
  t.same(c.log.filter((f) => f.type === 'ack'), [], 'no ack before the final replies');

  // Answer them last to first: each ack follows its own delivery, not the order of arrival.
  for (let i = K - 1; i >= 0; i--) {
    const held = peer.held.find((h) => h.body.subarray(-bodyOf(i).byteLength).equals(bodyOf(i)));
    t.ok(held, `message ${i} is held`);
    held?.release();
    await until(`ack of message ${i}`, () => c.log.some((f) => f.type === 'ack' && f.id === msgId(i)));
  }
  const acks = c.log.flatMap((f) => (f.type === 'ack' ? [f.id] : []));
  t.same(acks, [3, 2, 1, 0].map(msgId), 'acks out of arrival order');
  t.same(peer.stored.map((b) => b.subarray(b.indexOf('Subject:')).toString('latin1')),
    [3, 2, 1, 0].map((i) => bodyOf(i).toString('latin1')), 'each stored once, byte for byte after the trace header');
  t.equal(metric(a.metrics.render(), 'mailbridge_agent_in_flight'), 0);
});
