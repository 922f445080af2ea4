// Found by the queue's model (issue #22): the list in force published again in another number of
// parts (same entries, so the same digest) kept the old split's rows beside the new ones; the
// object then read "no list" and dropped the list: every unknown user was accepted, silently.
import { createHash } from 'node:crypto';
import t from 'tap';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';

t.test('the same list in a new number of parts stays in force', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0 });
  t.teardown(() => w.stop());
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  t.teardown(() => a.close());
  await a.hello({ agent: 'home', window: 4, credit: 8 << 20, fetch: true });
  const entries = ['alice@example.test', 'bob@example.test'];
  const digest = createHash('sha256').update(entries.join('\n')).digest('hex');
  const published = (): number => w.logs.filter((l) => l.includes('"event":"recipients.published"')).length;
  a.send({ type: 'recipients', digest, part: 0, parts: 2, delimiter: '', entries: entries.slice(0, 1) });
  a.send({ type: 'recipients', digest, part: 1, parts: 2, delimiter: '', entries: entries.slice(1) });
  for (let i = 0; i < 100 && published() < 1; i++) await new Promise((r) => setTimeout(r, 50));
  t.equal((await w.post('s@example.net', 'nobody@example.test', Buffer.from('Subject: x\r\n\r\nx\r\n'))).status, 550, 'in two parts: in force');
  a.send({ type: 'recipients', digest, part: 0, parts: 1, delimiter: '', entries });
  for (let i = 0; i < 100 && published() < 2; i++) await new Promise((r) => setTimeout(r, 50));
  t.equal((await w.post('s@example.net', 'nobody@example.test', Buffer.from('Subject: x\r\n\r\nx\r\n'))).status, 550, 'again in one part: still in force');
  t.equal((await w.post('s@example.net', 'bob@example.test', Buffer.from('Subject: x\r\n\r\nx\r\n'))).status, 200, 'a listed user is accepted');
  await w.rt.restart();
  t.equal((await w.post('s@example.net', 'nobody@example.test', Buffer.from('Subject: y\r\n\r\ny\r\n'))).status, 550, 'and after a restart');
});
