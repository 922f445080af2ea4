// local/r2-remote.ts: R2 in a workerd of its own, bound as the Worker's BODIES over HTTP, as
// bench:cloud runs it to keep R2's work off the Worker's thread. A message goes into that
// bucket and comes back byte-exact through GET /agent/body; with the bucket's process gone,
// email() fails temporarily: the Worker's bodies were there, not in an in-process bucket.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startR2Host } from '../../local/r2-remote.ts';
import { MAX_CHUNK_BYTES, type MessageFrame } from '../../protocol/wire.ts';
import { eightBitMessage, splitBlock } from '../helpers/mail.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';

t.test('BODIES in another process: byte-exact there and back; without that process email() fails temporarily', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-r2-remote-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const host = await startR2Host(dir);
  let hostUp = true;
  t.teardown(async () => { if (hostUp) await host.dispose(); });
  const w = await startTestWorker({ allowedDomains: ['example.test'], bodiesRemote: host.address });
  t.teardown(() => w.stop());

  const body = eightBitMessage(2 * MAX_CHUNK_BYTES + 777);
  const r = await w.post('a@sender.test', 'alice@example.test', body);
  t.equal(r.status, 200, 'accepted: the body is in the other process\'s bucket');
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await a.hello({ agent: 'test-agent', window: 4, credit: 8 << 20, fetch: true });
  const m = await a.until((s) => {
    for (const x of s) if (x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === String(r.body.id)) return x.frame as MessageFrame;
    return undefined;
  });
  t.ok(m.fetch, 'the agent is told to fetch the body');
  t.ok(splitBlock(await a.received(m.id)).rest.equals(body), 'fetched back byte-exact (size and MD5 checked on the way)');
  a.close();
  await a.closed;

  await host.dispose();
  hostUp = false;
  const down = await w.post('b@sender.test', 'alice@example.test', Buffer.from('Subject: x\r\n\r\nx\r\n'));
  t.not(down.status, 200, `not accepted without the bucket's process (HTTP ${down.status})`);
  t.ok(w.logs.some((l) => l.includes('"event":"email.tempfail"')), 'a temporary failure: the sender retries');
});
