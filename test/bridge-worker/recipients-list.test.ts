// The recipients list at SMTP time through the dev route, as the local ingress posts mail:
// a refused recipient is answered 550 whatever the size of the message still being sent.
import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { PROTOCOL_VERSION } from '../../protocol/wire.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';

t.test('a large message to a user not on the list gets its 550, not a reset the ingress would retry forever', async (t) => {
  const w = await startTestWorker();
  t.teardown(() => w.stop());
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await a.opened;
  t.teardown(() => a.close());
  a.send({ type: 'hello', v: PROTOCOL_VERSION, agent: 'home', window: 4, credit: 8 << 20, fetch: true });
  await a.until((s) => s.some((x) => x.kind === 'frame' && x.frame.type === 'welcome'));
  const entries = ['alice@example.test'];
  a.send({ type: 'recipients', digest: createHash('sha256').update(entries.join('\n')).digest('hex'), part: 0, parts: 1, delimiter: '', entries });
  for (let i = 0; i < 100 && !w.logs.some((l) => l.includes('"event":"recipients.published"')); i++) await new Promise((r) => setTimeout(r, 50));
  for (const size of [1000, 4 << 20]) {
    const r = await w.post('s@example.net', 'nobody@example.test', randomBytes(size));
    t.equal(r.status, 550, `${size} bytes: refused`);
    t.match(r.body.reason, /^5\.1\.1 <nobody@example\.test>: Recipient address rejected/);
  }
  t.same(await w.summary(), { incoming: 0, queued: 0, 'in-flight': 0, deferred: 0, hold: 0, bouncing: 0, bounced: 0, 'dead-letter': 0 }, 'nothing stored');
});
