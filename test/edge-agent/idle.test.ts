// Issue #16.5, idle means idle: after a fault has passed (every session closed with 1008 for a
// while, then a delivery), an agent with nothing to do sends nothing but heartbeats and writes
// next to no log lines. Counted in frames and lines, not in CPU time, so no timing makes it flaky.
import t from 'tap';
import { inProcess } from './in-process.ts';
import { header, msgId, push } from './scripted-object.ts';

const body = Buffer.from('Subject: quiet\r\n\r\nand then nothing\r\n', 'latin1');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('after 1008s and a delivery, 5 s of idle: no frame but heartbeats, at most a handful of log lines', async (t) => {
  const { object, agent, events } = await inProcess(t);
  object.kick = 'bad frame';
  agent({ maxReconnectMs: 1_000 });
  while (object.conns.length < 3) await sleep(50);
  object.kick = null;
  const c = await object.connection();
  push(c, header(msgId(5), body, ['alice@example.test']), body);
  t.match(await c.next('ack'), { id: msgId(5), results: [{ outcome: 'delivered' }] });

  let pings = 0;
  c.ws.on('message', (data, binary) => { if (!binary && String(data) === 'ping') pings++; });
  const sessions = object.conns.length;
  const frames = c.log.length;
  const lines = events.length;
  await sleep(5_000);
  t.equal(c.log.length - frames, 0, 'no control frame from the agent');
  t.ok(pings >= 2 && pings <= 7, `${pings} heartbeats in 5 s (one a second)`);
  t.equal(object.conns.length, sessions, 'no new session');
  t.ok(events.length - lines <= 2, `${events.length - lines} log lines: ${JSON.stringify(events.slice(lines).map((e) => e.event))}`);
});
