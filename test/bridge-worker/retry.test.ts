// Deferred messages are retried by the object's alarm and expire into dead-letter.
// Real alarms in real workerd, on a schedule shortened through the Worker's vars.
import t from 'tap';
import type { MessageFrame } from '../../protocol/wire.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';

t.test('tempfail -> deferred -> retried by the alarm with backoff -> dead-letter at the age limit', async (t) => {
  // An age limit of 5 s: a loaded machine (CI) once took 2 s to the first attempt, which left
  // room for only one retry under the 2.5 s this test had.
  const w = await startTestWorker({ vars: { RETRY_FIRST_MS: '500', RETRY_MAX_MS: '1000', MAX_AGE_MS: '5000' }, verdictWaitMs: 0 });
  t.teardown(() => w.stop());
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  t.teardown(() => a.close());
  await a.hello({ agent: 'retry-test', window: 4, credit: 8 << 20, fetch: true });
  // From before the post: the age limit counts from the message's arrival, at or after this.
  const started = Date.now();
  const posted = await w.post('s@example.net', 'alice@example.test', Buffer.from('Subject: retry\r\n\r\nx\r\n'));
  const id = String(posted.body.id);

  // Answer every attempt with a tempfail, noting when each arrived.
  const attempts: { attempt: number; at: number }[] = [];
  const answered = new Set<number>();
  while (Date.now() - started < 15000) {
    const s = await w.summary();
    if (s['dead-letter'] === 1) break;
    const msgs = a.frames().filter((f): f is MessageFrame => f.type === 'message' && f.id === id);
    // Answered once its bytes are there: a body in R2 at once (not fetched), chunks at their end frame.
    const ends = a.frames().filter((f) => f.type === 'end' && f.id === id).length;
    for (const m of msgs.filter((x, i) => x.fetch !== undefined || i < ends)) {
      if (answered.has(m.attempt)) continue;
      answered.add(m.attempt);
      attempts.push({ attempt: m.attempt, at: Date.now() - started });
      a.send({ type: 'ack', id, results: [{ recipient: 'alice@example.test', code: 451, enhanced: '4.3.0', text: 'mailbox busy', outcome: 'tempfail' }] });
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  t.same(await w.summary(), { incoming: 0, queued: 0, 'in-flight': 0, deferred: 0, hold: 0, bouncing: 0, bounced: 0, 'dead-letter': 1 }, 'ends in dead-letter: this agent has no bounce relay');
  t.same(attempts.map((x) => x.attempt), attempts.map((_, i) => i + 1), `attempts numbered 1, 2, ...: ${JSON.stringify(attempts)}`);
  t.ok(attempts.length >= 3 && attempts.length <= 7, `retried a bounded number of times (${attempts.length})`);
  const gaps = attempts.slice(1).map((x, i) => x.at - (attempts[i]?.at ?? 0));
  // The last attempt is due at the age limit itself, whatever the backoff says: one last try.
  t.ok(gaps.slice(0, -1).every((g) => g >= 450), `no retry before its backoff: gaps ${gaps.join(', ')} ms`);
  t.ok((attempts.at(-1)?.at ?? 0) >= 5000, 'the last attempt is at the age limit');
  const logged = w.logs.some((l) => l.includes('"event":"message.failed"') && l.includes(id) && l.includes('"reason":"expired"') && l.includes('"level":"warning"'));
  t.ok(logged, 'the failure is logged as a warning, with its reason');
  const frames = a.frames().length;
  await new Promise((r) => setTimeout(r, 800));
  t.equal(a.frames().length, frames, 'a dead-lettered message is not offered again');
});
