// Found by the queue's model (issue #22): an answer from an agent without a bounce relay that
// makes a bounce task pumped only that agent's connection, so another agent with a relay got
// the task only at the next alarm (up to AGENT_SILENT_MS / 2, 45 s by default).
import t from 'tap';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';

t.test('a bounce made by one agent\'s answer goes at once to another agent with a relay', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0 });
  t.teardown(() => w.stop());
  const hello = async (name: string, bounces: boolean): Promise<RawAgent> => {
    const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
    t.teardown(() => a.close());
    await a.hello({ agent: name, window: 1, credit: 1 << 20, fetch: true, bounces });
    return a;
  };
  const plain = await hello('plain', false);
  const id = String((await w.post('s@example.net', 'alice@example.test', Buffer.from('Subject: x\r\n\r\nx\r\n'))).body.id);
  await plain.until((s) => s.some((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === id));
  const relay = await hello('relay', true);
  plain.send({ type: 'ack', id, results: [{ recipient: 'alice@example.test', code: 550, enhanced: '5.1.1', text: 'no such user', outcome: 'permfail' }] });
  const task = await relay.until((s) => s.find((x) => x.kind === 'frame' && x.frame.type === 'bounce' && x.frame.id === id), 5_000).catch(() => null);
  t.ok(task, 'the agent with a relay got the bounce task within 5 s');
});

t.test('a message an agent shutting down hands back goes at once to another agent', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0 });
  t.teardown(() => w.stop());
  const hello = async (name: string): Promise<RawAgent> => {
    const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
    t.teardown(() => a.close());
    await a.hello({ agent: name, window: 1, credit: 1 << 20, fetch: true });
    return a;
  };
  const leaving = await hello('leaving');
  const id = String((await w.post('s@example.net', 'alice@example.test', Buffer.from('Subject: x\r\n\r\nx\r\n'))).body.id);
  await leaving.until((s) => s.some((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === id));
  const staying = await hello('staying');
  leaving.send({ type: 'nack', id, reason: 'shutdown', text: 'agent stopping' });
  const got = await staying.until((s) => s.find((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === id), 5_000).catch(() => null);
  t.ok(got, 'the other agent got the message within 5 s');
});
