// clock.ts: the queue's clock can be fixed only where TEST_CLOCK is set (test/model/ sets it; no
// wrangler file does, deploy.test.ts checks). Without it the /dev/clock route does not exist; with
// it, a deferred message is due once the fixed clock passes its retry time, in real workerd.
import t from 'tap';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, DEV_TOKEN, setTestClock, startTestWorker } from '../helpers/worker.ts';
import { shardOf } from '../../bridge-worker/shard-hash.ts';


t.test('without TEST_CLOCK there is no way to set the clock', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0 });
  t.teardown(() => w.stop());
  const res = await setTestClock(w.rt.url, Date.now() + 3_600_000);
  t.equal(res.status, 404, 'no /dev/clock route');
});

t.test('with TEST_CLOCK, a deferred message is retried once the clock passes its retry time', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { TEST_CLOCK: '1', RETRY_FIRST_MS: '3600000', RETRY_MAX_MS: '3600000' } });
  t.teardown(() => w.stop());
  const start = Date.UTC(2031, 0, 1);
  t.equal((await setTestClock(w.rt.url, start)).status, 200);
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  t.teardown(() => a.close());
  await a.hello({ agent: 'clock-test', window: 1, credit: 1 << 20, fetch: true });
  const id = String((await w.post('s@example.net', 'alice@example.test', Buffer.from('Subject: clock\r\n\r\nx\r\n'))).body.id);
  const first = await a.until((s) => s.find((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === id));
  t.ok(first, 'leased');
  a.send({ type: 'ack', id, results: [{ recipient: 'alice@example.test', code: 451, enhanced: '4.2.0', text: 'busy', outcome: 'tempfail' }] });
  const deferred = async (): Promise<number> => (await w.summary()).deferred ?? 0;
  for (let i = 0; i < 100 && (await deferred()) === 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(await deferred(), 1, 'deferred for an hour of the fixed clock');
  t.equal((await setTestClock(w.rt.url, start + 3_599_000)).status, 200);
  t.equal(await deferred(), 1, 'still deferred a second before its retry time');
  t.equal((await setTestClock(w.rt.url, start + 3_600_000)).status, 200);
  const again = await a.until((s) => s.filter((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === id).length === 2 || undefined);
  t.ok(again, 'leased again at once, not an hour of real time later');
});

t.test('the fixed clock outlives a restart: the object started again reads it, whoever wakes it first', async (t) => {
  const ADMIN = 'admin-token-0123456789abcdef';
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { TEST_CLOCK: '1', ADMIN_TOKEN: ADMIN } });
  t.teardown(() => w.stop());
  const start = Date.UTC(2031, 0, 1);
  t.equal((await setTestClock(w.rt.url, start)).status, 200);
  // Model seed 606: after a restart, the object ran its recovery (released leases and their
  // agent's affinity) on the real clock before the test could set the fixed one again.
  await w.rt.restart();
  const id = String((await w.post('s@example.net', 'alice@example.test', Buffer.from('Subject: clock\r\n\r\nx\r\n'))).body.id);
  const res = await fetch(new URL(`/admin/messages/${id}`, w.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
  const m = (await res.json()) as { receivedAt?: number };
  t.equal(m.receivedAt, start, 'received at the fixed time, not the real one');
});

t.test('after a restart, a shard that kept an older clock does not set it back for the others', async (t) => {
  const ADMIN = 'admin-token-0123456789abcdef';
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { TEST_CLOCK: '1', ADMIN_TOKEN: ADMIN, SHARDS: '2' } });
  t.teardown(() => w.stop());
  const rcpt = (shard: number): string => ['alice', 'bob', 'carol', 'dave', 'erin', 'frank'].map((u) => `${u}@example.test`).find((a) => shardOf(a, 2) === shard) ?? '';
  const setAt = (shard: number, at: number) => fetch(new URL(`/dev/clock?shard=${shard}&at=${at}`, w.rt.url), { method: 'POST', headers: { Authorization: `Bearer ${DEV_TOKEN}` } });
  const receivedAt = async (to: string): Promise<number | undefined> => {
    const id = String((await w.post('s@example.net', to, Buffer.from('Subject: clock\r\n\r\nx\r\n'))).body.id);
    const res = await fetch(new URL(`/admin/messages/${id}`, w.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
    return ((await res.json()) as { receivedAt?: number }).receivedAt;
  };
  const older = Date.UTC(2031, 0, 1);
  const later = older + 60_000;
  // Model seed 7000: shard 0 was last told an older time (an earlier sequence), shard 1 the latest.
  t.equal((await setAt(0, older)).status, 200);
  t.equal((await setAt(1, later)).status, 200);
  await w.rt.restart();
  t.equal(await receivedAt(rcpt(1)), later, 'shard 1 starts first, on the latest time');
  t.equal(await receivedAt(rcpt(0)), later, 'shard 0 starts next: the clock is not set back');
  t.equal(await receivedAt(rcpt(1)), later, 'nor for shard 1');
});
