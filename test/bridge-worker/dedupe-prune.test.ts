// The dedupe memory's prune reads every key of the day. With an agent online the alarm runs every
// half silence limit (every 45 s: 1,920 a day), and a prune in each made rows read the Free plan's
// first bound, about 2,500 messages a day (npm run bench:rows). The alarm prunes at most hourly.
// Counted by the bench's meter around the real object in workerd.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { METERED_ENTRY, takeMeter } from '../../bench/lib/metered.ts';
import type { MeterReport } from '../../bench/lib/sql-meter.ts';
import { cloudflareBlock } from '../../local/email-routing.ts';
import { startWorkerRuntime } from '../../local/worker-runtime.ts';
import { PING, type MessageFrame } from '../../protocol/wire.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, DEV_TOKEN } from '../helpers/worker.ts';

const PRUNE = 'DELETE FROM delivered WHERE acked_at < ?';

t.test('alarms every 500 ms with an agent online prune the dedupe memory once, not in each', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-prune-'));
  const rt = await startWorkerRuntime({
    entry: METERED_ENTRY, persistDir: dir, agentTokens: [AGENT_TOKEN], devIngressToken: DEV_TOKEN, verdictWaitMs: 0,
    vars: { AGENT_SILENT_MS: '1000' },  // an alarm every 500 ms while the agent is connected
  });
  t.teardown(async () => { await rt.dispose(); await rm(dir, { recursive: true, force: true }); });
  const take = (): Promise<MeterReport> => takeMeter(rt);

  const a = new RawAgent(new URL('/agent', rt.url).href.replace(/^http/, 'ws'), AGENT_TOKEN);
  t.teardown(() => a.close());
  await a.hello({ agent: 'prune-test', window: 4, credit: 8 << 20, fetch: true });
  const pinger = setInterval(() => a.send(PING), 200);
  t.teardown(() => clearInterval(pinger));

  // A delivered message leaves its key in the dedupe memory.
  const from = 'sender@example.net';
  const to = 'alice@example.test';
  const body = Buffer.concat([cloudflareBlock(from, to), Buffer.from('Subject: prune\r\n\r\nhello\r\n')]);
  const res = await fetch(new URL(`/dev/email?from=${from}&to=${to}`, rt.url), { method: 'POST', body, headers: { Authorization: `Bearer ${DEV_TOKEN}` } });
  t.equal(res.status, 200);
  const m = await a.until((s) => s.find((x): x is { kind: 'frame'; frame: MessageFrame } => x.kind === 'frame' && x.frame.type === 'message')?.frame);
  a.ackAll(m);
  await take();

  await new Promise((r) => setTimeout(r, 4_000));
  const r = await take();
  const alarms = r.kinds.alarm?.invocations ?? 0;
  t.ok(alarms >= 4, `the alarm ran every half silence limit (${alarms} in 4 s)`);
  t.ok((r.statements[PRUNE]?.alarm?.calls ?? 0) <= 1, `the dedupe memory pruned at most once (${r.statements[PRUNE]?.alarm?.calls ?? 0})`);
});
