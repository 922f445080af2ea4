// A silently dead connection: a TCP proxy between the agent and the object stops
// forwarding without closing anything, as when a NAT mapping is lost. Only the
// heartbeat can notice; the agent must drop the socket and connect again.
import t from 'tap';
import { inProcess, metric, until } from './in-process.ts';
import { header, msgId, push } from './scripted-object.ts';
import { startTcpProxy } from './tcp-proxy.ts';

const HEARTBEAT_MS = 300;

t.test('heartbeat: an idle live connection is kept; a silent one is dropped and replaced', async (t) => {
  const { object, agent, named, peer } = await inProcess(t);
  const proxy = await startTcpProxy(object.port);
  t.teardown(() => proxy.close());
  const first = object.connection();
  const a = agent({ workerUrl: `ws://127.0.0.1:${proxy.port}/agent`, heartbeatMs: HEARTBEAT_MS, maxReconnectMs: 500 });
  await first;

  // Idle but answering pongs for 5 heartbeat intervals: nothing is dropped.
  await new Promise((r) => setTimeout(r, 5 * HEARTBEAT_MS));
  t.equal(named('heartbeat.lost').length, 0, 'a live connection is kept');
  t.equal(proxy.accepted, 1);

  const second = object.connection();
  proxy.stall();
  await until('heartbeat.lost', () => named('heartbeat.lost').length === 1);
  const c = await second;
  t.equal(proxy.accepted, 2, 'connected again (through the proxy, on a fresh connection)');
  t.match(named('session.closed'), [{ heartbeatLost: true }]);

  // The new session works.
  const body = Buffer.from('Subject: after\r\n\r\nstill here\r\n', 'latin1');
  push(c, header(msgId(7), body, ['alice@example.test']), body);
  t.match(await c.next('ack'), { id: msgId(7), results: [{ outcome: 'delivered' }] });
  t.equal(peer.stored.length, 1);

  const m = a.metrics.render();
  t.equal(metric(m, 'mailbridge_agent_heartbeat_lost_total'), 1);
  t.equal(metric(m, 'mailbridge_agent_reconnects_total'), 1);
  t.equal(metric(m, 'mailbridge_agent_session_up'), 1);
});
