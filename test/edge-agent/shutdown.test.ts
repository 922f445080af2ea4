// Graceful stop: no new message is taken, in-flight ones finish within the grace
// period or are handed back (nack shutdown) without their final dot, and nothing
// is lost or stored twice. First in process against a scripted object, then the
// agent as a process against the real Worker, stopped with SIGTERM.
import t from 'tap';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drained, waitFor } from '../helpers/mail.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';
import { runAgent } from './agent-process.ts';
import { inProcess, until } from './in-process.ts';
import { startLmtpPeer } from './lmtp-peer.ts';
import { header, msgId, push } from './scripted-object.ts';
import { encodeFrame } from '../../protocol/wire.ts';

const body = (n: number, size = 0): Buffer =>
  Buffer.concat([Buffer.from(`Subject: ${n}\r\n\r\n`, 'latin1'), Buffer.alloc(size, 'x'), Buffer.from(`\r\nmessage ${n}\r\n`, 'latin1')]);

t.test('stopping: a delivery in progress finishes and is acked; a message offered meanwhile is handed straight back', async (t) => {
  const { peer, object, agent, named } = await inProcess(t, 'hold');
  const conn = object.connection();
  const a = agent();
  const c = await conn;
  push(c, header(msgId(1), body(1), ['alice@example.test']), body(1));
  await until('the delivery waiting for its final reply', () => peer.held.length === 1);

  const stopped = a.stop(10_000);
  push(c, header(msgId(2), body(2), ['bob@example.test']), body(2));
  t.match(await c.next('nack'), { id: msgId(2), reason: 'shutdown' }, 'the new message is handed back at once');
  peer.held[0]?.release();
  t.match(await c.next('ack'), { id: msgId(1), results: [{ outcome: 'delivered' }] }, 'the one in progress is acked');
  await stopped;
  t.equal(peer.stored.length, 1, 'only the first was delivered');
  t.same(c.log.map((f) => `${f.type}:${'id' in f ? f.id.slice(-1) : ''}`).filter((s) => !s.startsWith('credit') && !s.startsWith('recipients')), ['nack:2', 'ack:1']);
  t.same(named('deliver.handed-back').map((e) => e.id), [msgId(2)]);
});

t.test('stopping: a delivery stuck mid-body is handed back after the grace period and its final dot never sent', async (t) => {
  const { peer, object, agent, named } = await inProcess(t, 'store');
  const conn = object.connection();
  const a = agent();
  const c = await conn;
  // The object sends the header and the first chunks only: the LMTP client has started the
  // body and waits for more (it holds the latest chunk back, so the target sees the earlier ones).
  const b = body(3, 100_000);
  c.ws.send(encodeFrame(header(msgId(3), b, ['alice@example.test'])));
  for (let i = 0; i < 30_000; i += 10_000) c.ws.send(b.subarray(i, i + 10_000), { binary: true });
  await until('the first body bytes at the target', () => peer.dataBytes >= 10_000);

  await a.stop(200);
  t.match(await c.next('nack'), { id: msgId(3), reason: 'shutdown' });
  t.same(c.log.filter((f) => f.type === 'ack'), [], 'no ack');
  t.same(peer.stored, [], 'the target stored nothing: no final dot');
  t.match(named('deliver.handed-back'), [{ id: msgId(3), outcome: 'shutdown' }]);
});

t.test('stopping: a handed-back delivery whose 250 comes late is journaled, so its redelivery is answered from the journal', async (t) => {
  const { peer, object, agent, named } = await inProcess(t, 'hold');
  let conn = object.connection();
  const first = agent();
  let c = await conn;
  const h = header(msgId(4), body(4), ['alice@example.test']);
  push(c, h, body(4));
  await until('the delivery past its final dot', () => peer.held.length === 1);
  const stopped = first.stop(100);
  t.match(await c.next('nack'), { id: msgId(4), reason: 'shutdown' }, 'handed back after the grace period');
  peer.held[0]?.release();  // Dovecot's 250 arrives after all
  await stopped;

  conn = object.connection();
  agent();
  c = await conn;
  push(c, { ...h, attempt: 2 }, body(4));
  t.match(await c.next('ack'), { id: msgId(4), results: [{ outcome: 'delivered', code: 250 }] });
  t.equal(named('deliver.journal').length, 1, 'acked from the journal');
  t.equal(peer.stored.length, 1, 'exactly one copy');
});

t.test('SIGTERM against the real Worker: mid-delivery nothing is lost or doubled', async (t) => {
  const worker = await startTestWorker();
  t.teardown(() => worker.stop());
  const peer = await startLmtpPeer('hold');
  t.teardown(() => peer.close());
  const dir = t.testdir({ token: `${AGENT_TOKEN}\n` });
  const configFile = join(dir, 'agent.json');
  await writeFile(configFile, JSON.stringify({
    workerUrl: worker.agentUrl(), tokenFile: join(dir, 'token'), target: peer.url, stateDir: join(dir, 'state'),
    name: 'dell', http: '127.0.0.1:0', stopGraceMs: 500, maxReconnectMs: 1000,
  }));
  const start = () => {
    const p = runAgent({}, ['--config', configFile]);
    t.teardown(() => { p.child.kill('SIGKILL'); });
    return p;
  };

  t.test('the final reply comes during the grace period: acked, exit 0', async (t) => {
    // A grace period longer than the test needs: set by the environment, which wins over the file.
    const p = runAgent({ MAILBRIDGE_STOP_GRACE_MS: '20000' }, ['--config', configFile]);
    t.teardown(() => { p.child.kill('SIGKILL'); });
    await p.waitEvent('session.ready');
    t.equal((await worker.post('s@example.net', 'alice@example.test', body(5))).status, 200);
    await until('the delivery waiting for its final reply', () => peer.held.length === 1);
    p.child.kill('SIGTERM');
    t.match(await p.waitEvent('agent.stopping'), { graceMs: 20_000 });
    peer.held[0]?.release();
    t.equal(await p.exit, 0, 'exit 0');
    t.match(p.events().filter((e) => e.event.startsWith('deliver.')), [{ event: 'deliver.acked', outcome: 'acked' }]);
    await drained(() => worker.summary(), 5_000);
    t.equal(peer.stored.length, 1);
  });

  t.test('the target does not answer: handed back, exit 0; the next agent delivers it exactly once', async (t) => {
    peer.stored.length = 0;
    peer.mode = 'stall';
    const p = start();
    await p.waitEvent('session.ready');
    const raw = body(6, 50_000);
    t.equal((await worker.post('s@example.net', 'alice@example.test', raw)).status, 200);
    await until('the delivery stuck at DATA', () => peer.stalled === 1);
    p.child.kill('SIGTERM');
    t.equal(await p.exit, 0, 'exit 0 within the bound');
    t.match(p.events().filter((e) => e.event.startsWith('deliver.')), [{ event: 'deliver.handed-back', outcome: 'shutdown' }]);
    await waitFor('the nack at the Worker', async () => worker.logs.filter((l) => l.includes('"message.nacked"') && l.includes('"shutdown"')), 1, 5_000);
    t.match(await worker.summary(), { queued: 1, 'in-flight': 0, deferred: 0 }, 'back in the queue at once, not deferred');

    peer.mode = 'store';
    const again = start();
    await again.waitEvent('deliver.acked');
    await drained(() => worker.summary(), 5_000);
    t.equal(peer.stored.length, 1, 'exactly one copy');
    t.ok(peer.stored[0]?.subarray(-raw.byteLength).equals(raw), 'byte for byte');
    again.child.kill('SIGTERM');
    t.equal(await again.exit, 0);
  });
});
