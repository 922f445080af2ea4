// Several agents on one queue: each connection has its own leases; messages of a
// dropped connection wait a while for the same agent (whose journal knows whether
// they were delivered), then any agent takes them.
import t from 'tap';
import type { MessageFrame } from '../../protocol/wire.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const AFFINITY = 1500;
let w: TestWorker;
t.before(async () => { w = await startTestWorker({ vars: { AFFINITY_MS: String(AFFINITY) } }); });
t.teardown(() => w.stop());

async function agent(name: string, window = 4): Promise<RawAgent> {
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await a.hello({ agent: name, window, credit: 8 << 20, fetch: true });
  return a;
}
const got = (a: RawAgent, id: string): MessageFrame[] => a.frames().filter((f): f is MessageFrame => f.type === 'message' && f.id === id);
const leased = (a: RawAgent, id: string) => a.until(() => got(a, id).at(-1));
const ack = (a: RawAgent, m: MessageFrame) => a.send({ type: 'ack', id: m.id, results: m.recipients.map((recipient) => ({ recipient, code: 250, enhanced: null, text: 'ok', outcome: 'delivered' as const })) });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const post = async (n: string) => String((await w.post('s@sender.test', 'alice@example.test', Buffer.from(`Subject: ${n}\r\n\r\n${n}\r\n`))).body.id);

t.test('two agents share the queue: each message goes to exactly one of them', async (t) => {
  const [a, b] = [await agent('dell-a', 2), await agent('dell-b', 2)];
  const ids = [await post('1'), await post('2'), await post('3'), await post('4')];
  await a.until(() => ids.every((id) => got(a, id).length + got(b, id).length === 1) || undefined);
  t.ok(ids.some((id) => got(a, id).length === 1) && ids.some((id) => got(b, id).length === 1), 'both got work (window 2 each)');
  for (const id of ids) for (const x of [a, b]) { const m = got(x, id)[0]; if (m) { await x.received(id); ack(x, m); } }
  for (let i = 0; i < 80; i++) {
    const s = await w.summary();
    if ((s.queued ?? 0) + (s['in-flight'] ?? 0) === 0) break;
    await sleep(25);
  }
  t.match(await w.summary(), { queued: 0, 'in-flight': 0 });
  // Still exactly one, once every ack is in and a moment has passed: no message went to the
  // other agent as well, or back to the same one, and each was acked once.
  await sleep(300);
  t.same(ids.map((id) => got(a, id).length + got(b, id).length), [1, 1, 1, 1], 'each message sent to one agent, once, also after the acks');
  const acked = (id: string): number => w.logs.filter((l) => l.includes('"event":"message.acked"') && l.includes(id)).length;
  t.same(ids.map(acked), [1, 1, 1, 1], 'each acked once');
  a.close(); b.close();
  await Promise.all([a.closed, b.closed]);
});

t.test('a dropped connection: its messages wait for the same agent, not for another', async (t) => {
  const a = await agent('dell-a');
  const id = await post('affinity');
  await leased(a, id);
  const b = await agent('dell-b');
  a.ws.terminate();  // a crash: no nack, no ack
  await a.closed;
  await sleep(AFFINITY / 3);
  t.equal(got(b, id).length, 0, 'the other agent does not get it at once');
  const a2 = await agent('dell-a');
  const again = await leased(a2, id);
  t.equal(again.attempt, 2, 'the same agent, reconnected, gets it back');
  t.equal(got(b, id).length, 0);
  await a2.received(id);
  ack(a2, again);
  a2.close(); b.close();
  await Promise.all([a2.closed, b.closed]);
});

t.test('when the agent does not come back, another one takes its messages after the affinity time', async (t) => {
  const a = await agent('dell-a');
  const id = await post('failover');
  await leased(a, id);
  const b = await agent('dell-b');
  const dropped = Date.now();
  a.ws.terminate();
  const m = await b.until(() => got(b, id).at(-1), AFFINITY * 4);
  t.ok(Date.now() - dropped >= AFFINITY - 100, `failover after the affinity time (${Date.now() - dropped} ms)`);
  t.equal(m.attempt, 2);
  await b.received(id);
  ack(b, m);
  b.close();
  await b.closed;
});
