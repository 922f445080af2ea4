// SHARDS=4: recipients spread over four queue objects by a stable hash; an agent
// connection per shard; the admin API sees them all as one queue.
import t from 'tap';
import type { MessageFrame } from '../../protocol/wire.ts';
import { shardOf } from '../../bridge-worker/shard-hash.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const ADMIN = 'admin-token-0123456789abcdef';
let w: TestWorker;
t.before(async () => { w = await startTestWorker({ vars: { SHARDS: '4', ADMIN_TOKEN: ADMIN } }); });
t.teardown(() => w.stop());

const admin = async (path: string) => (await fetch(new URL(path, w.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } })).json() as Promise<Record<string, unknown>>;

t.test('shardOf is stable and spreads addresses', async (t) => {
  t.equal(shardOf('Alice@Example.Test', 4), shardOf('alice@example.test', 4), 'case does not matter');
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < 400; i++) { const s = shardOf(`user${i}@example.test`, 4); counts[s] = (counts[s] ?? 0) + 1; }
  t.ok(counts.every((c) => c > 60), `roughly even: ${counts.join(', ')}`);
  t.equal(shardOf('x@y.test', 1), 0);
});

t.test('each message is pushed on its recipient\'s shard only', async (t) => {
  const recipients = Array.from({ length: 12 }, (_, i) => `user${i}@example.test`);
  const ids = new Map<string, string>();
  for (const r of recipients) ids.set(r, String((await w.post('s@sender.test', r, Buffer.from(`To: ${r}\r\n\r\nx\r\n`))).body.id));
  const q = await admin('/admin/queue');
  t.match(q, { states: { queued: 12 }, shards: 4 });
  t.equal(((await admin('/admin/messages?state=queued')).messages as unknown[]).length, 12, 'the list spans every shard');
  const names = ['queue', 'queue-1', 'queue-2', 'queue-3'];
  t.same(await w.bodyKeys(), recipients.map((r) => `${names[shardOf(r, 4)]}/${ids.get(r)}`).sort(),
    'each body in R2 under its shard\'s prefix (each shard sweeps its own), named by its message id');

  const agents = await Promise.all([0, 1, 2, 3].map(async (i) => {
    const a = new RawAgent(`${w.agentUrl()}?shard=${i}`, AGENT_TOKEN);
    await a.hello({ agent: 'sharded', window: 16, credit: 8 << 20, fetch: true });
    return a;
  }));
  t.teardown(() => { for (const a of agents) a.close(); });
  for (const r of recipients) {
    const shard = shardOf(r, 4);
    const a = agents[shard] as RawAgent;
    const id = ids.get(r) ?? '';
    const m = await a.until((s) => s.find((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === id));
    t.ok(m, `${r} on shard ${shard}`);
    t.ok((await a.received(id)).toString('latin1').endsWith(`To: ${r}\r\n\r\nx\r\n`), `its body fetched with ?shard=${shard}`);
    const other = agents[(shard + 1) % 4] as RawAgent;
    t.equal((await other.fetchBody(id)).status, 404, 'not from another shard: it holds no lease on it');
  }
  const seen = agents.map((a) => a.frames().filter((f): f is MessageFrame => f.type === 'message').length);
  t.same(seen.reduce((a, b) => a + b, 0), 12, `no message on two shards (${seen.join(', ')})`);
  t.match(await admin('/admin/queue'), { states: { 'in-flight': 12 } });
  t.equal(((await admin('/admin/queue')).agents as unknown[]).length, 4, 'one agent connection per shard');

  const bad = new RawAgent(`${w.agentUrl()}?shard=4`, AGENT_TOKEN);
  await t.rejects(bad.opened, /HTTP 404/, 'no shard 4 of 4');
});
