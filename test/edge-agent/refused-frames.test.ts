// Issue #22: a frame the agent cannot accept for one message answers for that message alone;
// the session goes on. Before, a replayed message leased with `recipients: []` made the agent
// close the session with 1008: every message leased on it counted an unanswered lease, and
// good ones were given up with it.
import t from 'tap';
import { levelOf } from '../../protocol/log-levels.ts';
import { encodeFrame } from '../../protocol/wire.ts';
import { splitTrace } from '../helpers/mail.ts';
import { inProcess, until } from './in-process.ts';
import { bounceTask, header, msgId, push, sendBounce, type Conn } from './scripted-object.ts';

const body = (n: number): Buffer => Buffer.from(`Subject: m${n}\r\n\r\nbody ${n}\r\n`, 'latin1');

/** Sends a message frame the agent must refuse, then its chunks and end as the object would. */
function pushRaw(c: Conn, frame: Record<string, unknown>, b: Buffer): void {
  c.ws.send(JSON.stringify(frame));
  c.ws.send(b, { binary: true });
  c.ws.send(encodeFrame({ type: 'end', id: frame.id as string, chunks: 1 }));
}

t.test('bad message frames among good ones: each is nacked with its reason, the good ones are delivered on the same session', async (t) => {
  const { object, agent, peer, named } = await inProcess(t);
  agent({ maxReconnectMs: 1_000 });
  const c = await object.connection();
  const good = [1, 3, 5, 7].map((n) => ({ id: msgId(n), b: body(n) }));
  push(c, header(msgId(1), body(1), ['alice@example.test']), body(1));
  // The replayed message of issue #22: no recipients.
  pushRaw(c, { ...header(msgId(2), body(2), ['x@example.test']), recipients: [] }, body(2));
  push(c, header(msgId(3), body(3), ['alice@example.test']), body(3));
  // A field out of its range, and a header over the control-frame limit.
  pushRaw(c, { ...header(msgId(4), body(4), ['bob@example.test']), attempt: -1 }, body(4));
  push(c, header(msgId(5), body(5), ['alice@example.test']), body(5));
  pushRaw(c, { ...header(msgId(6), body(6), ['bob@example.test']), pad: 'x'.repeat(70_000) }, body(6));
  push(c, header(msgId(7), body(7), ['alice@example.test']), body(7));

  const nacks = [await c.next('nack'), await c.next('nack'), await c.next('nack')];
  t.match(nacks, [
    { id: msgId(2), reason: 'corrupt', text: /message frame refused: no recipients/ },
    { id: msgId(4), reason: 'corrupt', text: /message frame refused: bad attempt/ },
    { id: msgId(6), reason: 'corrupt', text: /message frame refused: a frame of \d+ characters, over the limit/ },
  ]);
  const acks = [];
  for (const _ of good) acks.push(await c.next('ack'));  // deliveries run in parallel: any order
  t.match(acks.sort((x, y) => ((x as { id: string }).id < (y as { id: string }).id ? -1 : 1)),
    good.map((g) => ({ id: g.id, results: [{ outcome: 'delivered' }] })), 'each good one delivered');
  await until('all stored', () => peer.stored.length >= good.length);
  t.same(peer.stored.map((s) => splitTrace(s)?.id).sort(), good.map((g) => g.id), 'only the good ones stored');
  t.same(peer.stored.map((s) => splitTrace(s)?.rest.toString('latin1')).sort(), good.map((g) => g.b.toString('latin1')), 'each whole');
  t.equal(c.ws.readyState, c.ws.OPEN, 'the session is still up');
  t.equal(object.conns.length, 1, 'no reconnect');
  t.same(named('session.violation'), []);
  t.match(named('frame.refused'), [{ id: msgId(2), type: 'message' }, { id: msgId(4) }, { id: msgId(6) }]);
  t.equal(levelOf('frame.refused'), 'warning', 'journalctl -p warning shows it');
  t.match(named('deliver.corrupt'), [{ id: msgId(2), error: /no recipients/ }, { id: msgId(4) }, { id: msgId(6) }], 'each in the delivery log');
});

t.test('a bad bounce task is answered deferred with its reason; a bad end fails that message alone', async (t) => {
  const { object, agent, peer, named } = await inProcess(t);
  agent({ maxReconnectMs: 1_000 });
  const c = await object.connection();
  sendBounce(c, { ...bounceTask(msgId(0xb1), Buffer.from('Subject: x\r\n\r\n')), results: [] });
  t.match(await c.next('bounced'), { id: msgId(0xb1), status: 'deferred', code: 0, text: /bounce frame refused: no results/ });
  // The right bytes, then an end frame that does not parse: the transfer cannot be trusted.
  c.ws.send(encodeFrame(header(msgId(8), body(8), ['alice@example.test'])));
  c.ws.send(body(8), { binary: true });
  c.ws.send(JSON.stringify({ type: 'end', id: msgId(8), chunks: -1 }));
  t.match(await c.next('nack'), { id: msgId(8), reason: 'corrupt', text: /end frame refused/ });
  push(c, header(msgId(9), body(9), ['alice@example.test']), body(9));
  t.match(await c.next('ack'), { id: msgId(9), results: [{ outcome: 'delivered' }] });
  t.same(peer.stored.map((s) => splitTrace(s)?.id), [msgId(9)]);
  t.equal(object.conns.length, 1, 'no reconnect');
  t.same(named('session.violation'), []);
});

t.test('a frame that names no message still breaks the session (1008)', async (t) => {
  const { object, agent, named } = await inProcess(t);
  agent({ maxReconnectMs: 1_000 });
  const c = await object.connection();
  const closed = new Promise<number>((r) => c.ws.once('close', (code) => r(code)));
  c.ws.send(JSON.stringify({ type: 'message', id: 'not-an-id', recipients: [] }));
  t.equal(await closed, 1008);
  t.match(named('session.violation'), [{ why: 'malformed or unknown frame' }]);
});
