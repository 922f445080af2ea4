// Issue #16, "the queue never stalls": after any close the agent waits before it connects
// again, longer after each session the object ends early, and logs a streak of failures once.
// Before, a session closed right after welcome was followed at once by the next one: hundreds
// a second, each logged.
import t from 'tap';
import { backoffMs, resetsBackoff } from '../../edge-agent/session/backoff.ts';
import { inProcess, metric, until } from './in-process.ts';
import { header, msgId, push } from './scripted-object.ts';

const body = Buffer.from('Subject: again\r\n\r\nafter the storm\r\n', 'latin1');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('backoffMs doubles from 1-2 s up to the maximum, half of each wait random', async (t) => {
  t.same([1, 2, 3].map((n) => backoffMs(n, 60_000, () => 0)), [1_000, 2_000, 4_000]);
  t.same([1, 2, 3].map((n) => backoffMs(n, 60_000, () => 1)), [2_000, 4_000, 8_000]);
  t.equal(backoffMs(50, 120_000, () => 1), 120_000, 'never above maxReconnectMs');
  t.equal(backoffMs(50, 120_000, () => 0), 60_000, 'still jittered at the maximum');
});

t.test('every session closed with 1008 right after welcome: a few reconnects, not hundreds; then it delivers', async (t) => {
  const { object, agent, named } = await inProcess(t);
  object.kick = 'bad frame';
  const a = agent({ maxReconnectMs: 4_000 });
  await sleep(5_000);
  const kicked = object.conns.length;
  t.ok(kicked >= 2 && kicked <= 5, `${kicked} sessions in 5 s (waits 1-2 s, 2-4 s, 2-4 s, ...)`);
  t.equal(named('session.closed').length, kicked, 'one line per session');
  t.ok(named('session.closed').every((e) => e.code === 1008 && typeof e.retryInMs === 'number'), 'each says when the next try is');
  t.equal(metric(a.metrics.render(), 'mailbridge_agent_sessions_total'), kicked);

  object.kick = null;
  const conn = object.connection();
  const c = await conn;
  push(c, header(msgId(1), body, ['alice@example.test']), body);
  t.match(await c.next('ack'), { id: msgId(1), results: [{ outcome: 'delivered' }] });
});

t.test('a streak of failed connects is logged once; metrics count each; recovery is logged', async (t) => {
  const { object, agent, named } = await inProcess(t);
  object.refuse = true;
  const a = agent({ maxReconnectMs: 1_000 });
  await until('three failed attempts', () => (metric(a.metrics.render(), 'mailbridge_agent_connect_failures_total') ?? 0) >= 3);
  t.equal(named('connect.failed').length, 1, 'the same error again is not logged again');
  t.match(named('connect.failed')[0], { attempt: 1, error: /closed before welcome/, retryInMs: Number });

  object.refuse = false;
  const c = await object.connection();
  await until('connect.recovered', () => named('connect.recovered').length > 0);
  const failed = metric(a.metrics.render(), 'mailbridge_agent_connect_failures_total');
  t.match(named('connect.recovered'), [{ failedAttempts: failed }], 'one line, with how many attempts failed');
  push(c, header(msgId(2), body, ['alice@example.test']), body);
  t.match(await c.next('ack'), { id: msgId(2), results: [{ outcome: 'delivered' }] });
});

t.test('stop() does not wait out a backoff', async (t) => {
  const { object, agent } = await inProcess(t);
  object.kick = 'bad frame';
  const a = agent({ maxReconnectMs: 60_000 });
  await until('two sessions', () => object.conns.length >= 2);  // now waiting 1-4 s
  const started = Date.now();
  await a.stop(1_000);
  t.ok(Date.now() - started < 1_000, `stopped in ${Date.now() - started} ms`);
});

t.test('resetsBackoff: work done on a session starts the waits over, unless the object refused a frame of ours', async (t) => {
  t.equal(resetsBackoff({ upMs: 23_000, refusedByObject: false, acks: 5 }), true, 'issue #22: up 23 s, mail delivered');
  t.equal(resetsBackoff({ upMs: 10, refusedByObject: false, acks: 1 }), true);
  t.equal(resetsBackoff({ upMs: 30_000, refusedByObject: false, acks: 0 }), true, 'up long enough');
  t.equal(resetsBackoff({ upMs: 29_999, refusedByObject: false, acks: 0 }), false);
  t.equal(resetsBackoff({ upMs: 60_000, refusedByObject: true, acks: 9 }), false, 'issue #16: acks, then the object\'s 1008');
});

t.test('a session that delivered resets the backoff, though the agent then closed it with 1008; the object\'s 1008 after an ack does not', async (t) => {
  const { object, agent, named } = await inProcess(t);
  agent({ maxReconnectMs: 60_000 });
  const garbage = async (): Promise<void> => {
    const c = await object.connection();
    c.ws.send('{}');  // names no message: the agent closes the session (1008)
  };
  // Two sessions the agent closes at once: the waits grow (1-2 s, then 2-4 s).
  await garbage();
  await garbage();
  const c = await object.connection();
  push(c, header(msgId(0x22), body, ['alice@example.test']), body);
  t.match(await c.next('ack'), { id: msgId(0x22), results: [{ outcome: 'delivered' }] });
  c.ws.send('{}');
  await until('three sessions closed', () => named('session.closed').length >= 3);
  const [first, second, third] = named('session.closed');
  t.match([first, second], [{ code: 1008, acks: 0 }, { code: 1008, acks: 0 }]);
  t.ok(Number(second?.retryInMs) >= 2_000, `the wait grew: ${String(second?.retryInMs)} ms`);
  t.match(third, { code: 1008, acks: 1 });
  t.ok(Number(third?.retryInMs) <= 2_000, `after a session that delivered, the first wait again: ${String(third?.retryInMs)} ms`);

  // The object refuses a frame of ours (1008) after an ack: that is #16's loop, the wait grows.
  const d = await object.connection();
  push(d, header(msgId(0x23), body, ['alice@example.test']), body);
  t.match(await d.next('ack'), { id: msgId(0x23) });
  d.ws.close(1008, 'the ack broke the protocol');
  await until('four sessions closed', () => named('session.closed').length >= 4);
  t.match(named('session.closed')[3], { code: 1008, acks: 1 });
  t.ok(Number(named('session.closed')[3]?.retryInMs) >= 2_000, `no fresh start: ${String(named('session.closed')[3]?.retryInMs)} ms`);
});
