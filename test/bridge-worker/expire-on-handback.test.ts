// A message whose age ran out while an agent held it, handed back by that agent's shutdown
// nack, fails at once (bouncing), not at the next alarm: the queue's model found it queued past
// its age limit with no agent left to take it (npm run fuzz -- --model, seed 101, sequence 801).
import t from 'tap';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, setTestClock, startTestWorker } from '../helpers/worker.ts';


t.test('a shutdown nack of a message past its age: it fails with that nack, no alarm waited for', async (t) => {
  const age = 600_000;
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { TEST_CLOCK: '1', MAX_AGE_MS: String(age), RETRY_FIRST_MS: '60000' } });
  t.teardown(() => w.stop());
  const start = Date.UTC(2031, 0, 1);
  t.equal((await setTestClock(w.rt.url, start)).status, 200);
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  t.teardown(() => a.close());
  await a.hello({ agent: 'handback', window: 3, credit: 1 << 20, fetch: true, bounces: true });
  const id = String((await w.post('s@example.net', 'alice@example.test', Buffer.from('Subject: old\r\n\r\nx\r\n'))).body.id);
  t.ok(await a.until((s) => s.find((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === id)), 'leased');
  t.equal((await setTestClock(w.rt.url, start + 3_600_001)).status, 200, 'an hour on, while leased');
  t.equal((await w.summary())['in-flight'], 1, 'a leased message is not expired under its agent');
  a.send({ type: 'nack', id, reason: 'shutdown', text: 'agent stopping' });
  // The first summary that shows the nack taken: the handback and the expiry are one step, so it
  // never shows the message queued (before the fix it was, until the alarm ran).
  let s = await w.summary();
  for (let i = 0; i < 200 && s['in-flight'] === 1; i++) s = await w.summary();
  t.equal(s.queued ?? 0, 0, 'not queued past its age');
  t.equal(s.bouncing, 1, `failed as expired, its bounce owed: ${JSON.stringify(s)}`);
});
