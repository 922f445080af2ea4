// GET /agent/body/<id> serves a body in R2 only to the agent that holds the message's lease,
// in real workerd: the agent names its session (the welcome's) in the Mailbridge-Session header,
// and an agent token alone (every agent's) fetches nothing leased to another connection. An
// agent whose hello does not say `fetchSession` (one of before it, during an upgrade) presents
// no session, and still gets the bodies leased to it.
import t, { type Test } from 'tap';
import { PROTOCOL_VERSION, type HelloFrame } from '../../protocol/wire.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

async function connect(t: Test, w: TestWorker, name: string, fetchSession: boolean): Promise<RawAgent> {
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await a.opened;
  t.teardown(() => a.close());
  const hello: HelloFrame = { type: 'hello', v: PROTOCOL_VERSION, agent: name, window: 4, credit: 8 << 20, fetch: true, ...(fetchSession ? { fetchSession: true } : {}) };
  a.send(hello);
  await a.until(() => a.session ?? undefined);
  return a;
}

const ack = (a: RawAgent, id: string) => a.send({ type: 'ack', id, results: [{ recipient: 'alice@example.test', code: 250, enhanced: null, text: 'ok', outcome: 'delivered' }] });

t.test('a body leased to one agent is served to it alone', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0 });
  t.teardown(() => w.stop());
  const body = Buffer.from('Subject: mine\r\n\r\nfor the lease holder only\r\n');
  const id = String((await w.post('s@sender.test', 'alice@example.test', body)).body.id);
  const holder = await connect(t, w, 'holder', true);
  await holder.until(() => holder.messageFrame(id));
  const other = await connect(t, w, 'other', true);
  t.equal((await other.fetchBody(id)).status, 404, 'another agent, with its own session: 404');
  t.equal((await other.fetchBody(id, null)).status, 404, 'the agent token alone, no session: 404');
  t.equal((await other.fetchBody(id, '0'.repeat(32))).status, 404, 'a made-up session: 404');
  t.equal((await other.fetchBody(id, 'not-a-session')).status, 404, 'a malformed one: 404');
  const got = await holder.fetchBody(id);
  t.equal(got.status, 200, 'the lease holder, naming its session: served');
  t.ok(got.bytes.subarray(got.bytes.length - body.length).equals(body), 'the body');
  ack(holder, id);
});

t.test('an agent of before fetchSession presents no session and still gets the bodies leased to it', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0 });
  t.teardown(() => w.stop());
  const id = String((await w.post('s@sender.test', 'alice@example.test', Buffer.from('Subject: old\r\n\r\nx\r\n'))).body.id);
  const old = await connect(t, w, 'old-agent', false);
  await old.until(() => old.messageFrame(id));
  const other = await connect(t, w, 'other', true);
  t.equal((await other.fetchBody(id)).status, 404, 'a newer agent with its own session: 404');
  t.equal((await old.fetchBody(id, null)).status, 200, 'the old agent, no session: served, as before');
  t.equal((await old.fetchBody(id)).status, 200, 'and with its session');
  ack(old, id);
});
