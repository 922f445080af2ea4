// An agent with shards = 4 against a Worker with SHARDS = 4: one connection per
// queue object, every recipient's mail delivered whatever its shard, each body
// fetched from R2 through its own shard.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent } from '../../edge-agent/agent.ts';
import { validateConfig } from '../../edge-agent/agent-config.ts';
import { silentLogger } from '../../edge-agent/ops/log.ts';
import { startMaildirTarget } from '../../local/maildir-target.ts';
import { shardOf } from '../../bridge-worker/shard-hash.ts';
import { drained, maildirNew, splitTrace, waitFor } from '../helpers/mail.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';

t.test('one connection per shard; mail for every shard is delivered', async (t) => {
  const w = await startTestWorker({ vars: { SHARDS: '4' } });
  t.teardown(() => w.stop());
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-shards-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const target = await startMaildirTarget({ root: join(dir, 'maildir') });
  t.teardown(() => target.close());
  const agent = startAgent(validateConfig({ workerUrl: w.agentUrl(), token: AGENT_TOKEN, target: target.url, name: 'sharded', shards: 4 }), join(dir, 'state'), silentLogger);
  t.teardown(() => agent.stop(2000));
  await agent.connected;
  await waitFor('four sessions', async () => (agent.health().session ? [1] : []), 1, 10_000);

  const recipients = Array.from({ length: 12 }, (_, i) => `user${i}@example.test`);
  t.same(new Set(recipients.map((r) => shardOf(r, 4))).size, 4, 'the recipients cover all four shards');
  for (const r of recipients) {
    const body = Buffer.from(`To: ${r}\r\nSubject: shard\r\n\r\nfor ${r}\r\n`);
    t.equal((await w.post('s@example.net', r, body)).status, 200);
    const [stored] = await waitFor(`mail for ${r}`, () => maildirNew(join(target.root, r)), 1);
    t.ok(splitTrace(stored ?? Buffer.alloc(0))?.rest.equals(body), `${r}: byte-exact`);
  }
  await drained(() => w.summary());
  t.equal(agent.stats.sessions, 4, 'four sessions, one per shard');
  t.equal(w.logs.filter((l) => l.includes('"event":"message.acked"') && l.includes('"body":"r2"')).length, 12, 'every body went through R2, fetched from its own shard');
  for (let i = 0; i < 50 && (await w.bodyKeys()).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  t.same(await w.bodyKeys(), [], 'and was deleted there once acked');
});
