// The object's side of a bounce task the agent found delivered (its ack was lost): `bounced
// delivered` with the task's recipients settles the message as acked (row and bytes gone, the
// results in the log, no DSN counted); an answer that does not name exactly the task's
// recipients is refused for that message alone: its bounce is deferred, the connection stays.
import t from 'tap';
import type { BounceFrame, RecipientResult } from '../../protocol/wire.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';

const ADMIN = 'admin-token-0123456789abcdef';

async function hello(url: string): Promise<RawAgent> {
  const a = new RawAgent(url, AGENT_TOKEN);
  await a.hello({ agent: 'found-test', window: 4, credit: 8 << 20, fetch: true, bounces: true });
  return a;
}

const delivered = (recipient: string): RecipientResult =>
  ({ recipient, code: 250, enhanced: '2.0.0', text: `<${recipient}> Saved`, outcome: 'delivered' });

t.test('bounced delivered settles a given-up message as acked; a wrong recipient defers its bounce', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { MAX_UNSETTLED_LEASES: '1', RETRY_FIRST_MS: '1000', ADMIN_TOKEN: ADMIN } });
  t.teardown(() => w.stop());
  const id = String((await w.post('s@example.net', 'alice@example.test', Buffer.from('Subject: lost ack\r\n\r\nx\r\n'))).body.id);
  const row = async (): Promise<{ status: number; body: Record<string, unknown> }> => {
    const r = await fetch(new URL(`/admin/messages/${id}`, w.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  };
  // Leased, then the connection dies unanswered (the agent's ack lost with it): given up.
  const first = await hello(w.agentUrl());
  await first.until((s) => s.some((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === id) || false);
  first.ws.terminate();
  await first.closed;

  const a = await hello(w.agentUrl());
  const task = (n: number): Promise<BounceFrame> => a.until((s) => {
    const tasks = s.flatMap((x) => (x.kind === 'frame' && x.frame.type === 'bounce' && x.frame.id === id ? [x.frame] : []));
    return tasks.length >= n ? tasks[n - 1] : false;
  }, 15_000);
  t.match(await task(1), { id, reason: 'attempts', results: [{ recipient: 'alice@example.test', outcome: 'tempfail' }] });
  t.match((await row()).body, { state: 'bouncing', failure: 'attempts' });

  // What an object older than `delivered` does with it, as this one does with a status it does
  // not know: refuses the answer for that message alone, defers its bounce, keeps the connection.
  a.send(JSON.stringify({ type: 'bounced', id, status: 'vanished', code: 250, text: 'x', results: [delivered('alice@example.test')] }));
  await task(2);
  t.equal(w.logs.filter((l) => l.includes('"agent.answer-rejected"') && l.includes(id)).length, 1, 'an unknown status: refused, the bounce offered again');
  t.match((await row()).body, { state: 'bouncing' }, 'not lost');

  a.send({ type: 'bounced', id, status: 'delivered', code: 250, text: 'found in the journal', results: [delivered('mallory@example.test')] });
  await task(3);
  t.equal(w.logs.filter((l) => l.includes('"agent.answer-rejected"') && l.includes(id)).length, 2, 'not a recipient of the task: refused, its bounce deferred and offered again');

  a.send({ type: 'bounced', id, status: 'delivered', code: 250, text: 'found in the journal', results: [delivered('alice@example.test')] });
  for (let i = 0; i < 100 && (await row()).status !== 404; i++) await new Promise((r) => setTimeout(r, 50));
  t.equal((await row()).status, 404, 'row gone, as after an ack');
  t.same(Object.values(await w.summary()).filter((n) => n > 0), [], 'nothing left in any state: not bounced, not dead-letter');
  const acked = w.logs.find((l) => l.includes('"message.acked"') && l.includes(id)) ?? '';
  t.match(acked, /"foundAt":"bounce"/);
  t.match(acked, /alice@example\.test delivered 250/, 'the per-recipient results in the log');
  t.notOk(w.logs.some((l) => l.includes('"bounce.sent"') && l.includes(id)));
  a.close();
});
