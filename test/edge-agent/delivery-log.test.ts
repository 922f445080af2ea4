// Issue #17 item 4 through a real LMTP exchange: the agent logs one delivery.* line per
// recipient with Postfix's fields, its status mapped from the target's reply, and a
// redelivery answered from the journal says relay=journal.
import t from 'tap';
import { inProcess } from './in-process.ts';
import { header, msgId, push } from './scripted-object.ts';

t.test('250, 452 and 550 for three recipients: sent, deferred, bounced, each on its own line', async (t) => {
  const { object, agent, peer, events } = await inProcess(t);
  peer.finalReply = (r) => (r.startsWith('a@') ? `250 2.0.0 <${r}> Saved\r\n` : r.startsWith('b@') ? '452 4.2.2 Mailbox is full\r\n' : '550 5.1.1 No such user\r\n');
  const conn = object.connection();
  agent();
  let c = await conn;
  const body = Buffer.from('Subject: three\r\n\r\nhi\r\n');
  const h = { ...header(msgId(0x17), body, ['a@home.test', 'b@home.test', 'c@home.test']), sender: 'alice@example.net', receivedAt: Date.now() - 2_000 };
  push(c, h, body);
  await c.next('ack');
  const lines = events.filter((e) => e.event.startsWith('delivery.'));
  t.same(lines.map((e) => [e.event, e.to, e.status, e.dsn]), [
    ['delivery.sent', 'a@home.test', 'sent', '2.0.0'],
    ['delivery.deferred', 'b@home.test', 'deferred', '4.2.2'],
    ['delivery.bounced', 'c@home.test', 'bounced', '5.1.1'],
  ]);
  t.match(lines[0], { id: msgId(0x17), from: 'alice@example.net', relay: `127.0.0.1:${peer.port}`, attempt: 1, reply: '250 2.0.0 <a@home.test> Saved' });
  t.ok(Number(lines[0]?.delay) >= 2 && /^[0-9.]+\/[0-9.]+$/.test(String(lines[0]?.delays)), `delay ${String(lines[0]?.delay)}, delays ${String(lines[0]?.delays)}`);

  // Another message, its ack lost: the redelivery is answered from the journal.
  const one = { ...header(msgId(0x18), body, ['a@home.test']), sender: '' };
  push(c, one, body);
  await c.next('ack');
  const next = object.connection();
  c.ws.terminate();
  c = await next;
  push(c, { ...one, attempt: 2 }, body);
  await c.next('ack');
  t.match(events.filter((e) => e.event.startsWith('delivery.') && e.id === msgId(0x18)), [
    { event: 'delivery.sent', attempt: 1, from: '', relay: `127.0.0.1:${peer.port}` },
    { event: 'delivery.sent', attempt: 2, from: '', relay: 'journal', reply: '250 2.0.0 <a@home.test> Saved' },
  ]);
});
