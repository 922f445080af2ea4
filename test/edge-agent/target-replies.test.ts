// Issue #16, what the target answers and what the agent acks. Long multi-line replies must
// never make an ack the object refuses (the scripted object, like the real one, closes with
// 1008 on a frame its parser rejects): the agent cuts each text to the wire's limits, and a
// redelivery answered from the journal gets the same, valid ack. A reply the LMTP client
// cannot read after the final dot is a tempfail like any other: not journaled, delivered again.
import t from 'tap';
import { MAY_BE_DELIVERED } from '../../lmtp-proxy/client.ts';
import { CUT_MARK, encodeFrame, MAX_CONTROL_FRAME, MAX_RESULT_TEXT, type AckFrame } from '../../protocol/wire.ts';
import { inProcess } from './in-process.ts';
import { header, msgId, push } from './scripted-object.ts';

const body = Buffer.from('Subject: many\r\n\r\nto a hundred\r\n', 'latin1');
const recipients = Array.from({ length: 100 }, (_, i) => `user${i}@example.test`);
// 40 lines of 90 characters, each '"' and '\' doubled by JSON: about 7 KB per recipient once
// encoded, 700 KB for the hundred, ten times what one control frame may hold.
const longReply = (r: string): string =>
  Array.from({ length: 40 }, (_, i) => `250${i === 39 ? ' ' : '-'}2.0.0 <${r}> "saved\\" ${'\\"'.repeat(30)}`).join('\r\n') + '\r\n';

t.test('100 recipients answered with long multi-line replies: the ack fits and is taken, from the journal too', async (t) => {
  const { object, agent, peer } = await inProcess(t);
  peer.finalReply = longReply;
  const conn = object.connection();
  agent();
  let c = await conn;
  const h = header(msgId(16), body, recipients);
  push(c, h, body);
  const ack = (await c.next('ack')) as AckFrame;  // a refused ack would have closed the socket
  t.equal(ack.results.length, 100);
  t.ok(ack.results.every((r) => r.outcome === 'delivered' && r.code === 250), 'every recipient delivered');
  t.ok(ack.results.every((r) => r.text.length <= MAX_RESULT_TEXT && r.text.endsWith(CUT_MARK)), 'every text cut and marked');
  t.ok(encodeFrame(ack).length <= MAX_CONTROL_FRAME);
  t.equal(peer.stored.length, 1);

  // The ack was lost: the object drops the socket and redelivers the id on the next one.
  const next = object.connection();
  c.ws.terminate();
  c = await next;
  push(c, { ...h, attempt: 2 }, body);
  t.same(await c.next('ack'), ack, 'the same ack, answered from the journal');
  t.equal(peer.stored.length, 1, 'not delivered twice');
});

t.test('a garbage line after the final dot: acked tempfail (may have been delivered), then delivered again, not from the journal', async (t) => {
  const { object, agent, peer } = await inProcess(t);
  peer.finalReply = () => 'this is not a reply\r\n';
  const conn = object.connection();
  const a = agent();
  const c = await conn;
  const h = header(msgId(17), body, ['alice@example.test']);
  push(c, h, body);
  const first = (await c.next('ack')) as AckFrame;
  t.match(first.results, [{ recipient: 'alice@example.test', code: 0, enhanced: null, outcome: 'tempfail', text: /^EPROTOCOL: malformed reply line/ }]);
  t.match(first.results[0]?.text, MAY_BE_DELIVERED);

  // The object defers the tempfail recipient and offers the message again later.
  peer.finalReply = (r) => `250 2.0.0 <${r}> Saved\r\n`;
  push(c, { ...h, attempt: 2 }, body);
  t.match(await c.next('ack'), { id: h.id, results: [{ outcome: 'delivered', code: 250 }] });
  t.equal(a.stats.fromJournal, 0, 'a tempfail is not journaled: the redelivery went to the target');
  t.equal(peer.stored.length, 2, 'the target had stored the first one: the duplicate the text warned of');
});

t.test('a long 421 after the final dot: the ack still says "may have been delivered", however the wire cuts the text', async (t) => {
  // Found by the path fuzzer (seed 3, 200 messages): the target stored the copy, then answered
  // a 421 of many long lines; the note went after the text and the cut to MAX_RESULT_TEXT took
  // it off, so the duplicate that followed was unexplained.
  const { object, agent, peer } = await inProcess(t);
  const long421 = Array.from({ length: 30 }, (_, i) => `421${i === 29 ? ' ' : '-'}4.3.2 going away ${'"'.repeat(20)}${'x'.repeat(60)}`).join('\r\n') + '\r\n';
  peer.finalReply = () => long421;
  const conn = object.connection();
  agent();
  const c = await conn;
  push(c, header(msgId(18), body, ['alice@example.test']), body);
  const one = (await c.next('ack')) as AckFrame;
  t.match(one.results, [{ code: 421, outcome: 'tempfail' }]);
  t.ok(one.results[0]?.text.endsWith(CUT_MARK), 'the text was cut to the wire\'s limit');
  t.match(one.results[0]?.text, MAY_BE_DELIVERED, 'one recipient: the note outlived the cut');
  // A hundred recipients share one frame: each text is cut much shorter.
  push(c, header(msgId(19), body, recipients), body);
  const all = (await c.next('ack')) as AckFrame;
  t.equal(all.results.length, 100);
  t.ok(all.results.every((r) => r.code === 421 && r.text.includes(MAY_BE_DELIVERED)), 'a hundred recipients: every note outlived the cut');
});
