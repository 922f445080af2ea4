// The recipients list at SMTP time through the dev route, as the local ingress posts mail:
// a refused recipient is answered 550 whatever the size of the message still being sent.
import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';

t.test('a large message to a user not on the list gets its 550, not a reset the ingress would retry forever', async (t) => {
  const w = await startTestWorker();
  t.teardown(() => w.stop());
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  t.teardown(() => a.close());
  await a.hello({ agent: 'home', window: 4, credit: 8 << 20, fetch: true });
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

t.test('a list is replaced whole or not at all: stray parts are dropped with their connection, never read after a wake-up', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0 });
  t.teardown(() => w.stop());
  const digest = (s: string) => createHash('sha256').update(s).digest('hex');
  const published = () => w.logs.filter((l) => l.includes('"event":"recipients.published"')).length;
  const connect = async (): Promise<RawAgent> => {
    const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
    await a.hello({ agent: 'home', window: 4, credit: 8 << 20, fetch: true });
    return a;
  };
  const status = async (to: string) => (await w.post('s@example.net', to, Buffer.from(`Subject: ${to}\r\n\r\nx\r\n`))).status;

  const a = await connect();
  a.send({ type: 'recipients', digest: digest('L1'), part: 0, parts: 1, delimiter: '', entries: ['alice@example.test'] });
  for (let i = 0; i < 100 && published() < 1; i++) await new Promise((r) => setTimeout(r, 50));
  // Half of another list, then the connection drops.
  a.send({ type: 'recipients', digest: digest('L2'), part: 0, parts: 2, delimiter: '', entries: ['bob@example.test'] });
  await new Promise((r) => setTimeout(r, 200));
  a.close();
  await a.closed;

  // A wake-up with a stray part (its connection gone): the older complete list, not "no list".
  await w.rt.restart();
  t.equal(await status('nobody@example.test'), 550, 'after a restart: unknown users still refused');
  t.equal(await status('alice@example.test'), 200);

  // Another connection sends the other half: it completes nothing, the stray half went with its connection.
  const b = await connect();
  t.teardown(() => b.close());
  b.send({ type: 'recipients', digest: digest('L2'), part: 1, parts: 2, delimiter: '', entries: ['carol@example.test'] });
  await new Promise((r) => setTimeout(r, 200));
  t.equal(await status('alice@example.test'), 200, 'the complete list still in force');
  t.equal(await status('bob@example.test'), 550, 'no list made of two connections\' halves');

  // One list at a time per connection: parts of 20 lists keep only the last one's.
  const c = await connect();
  t.teardown(() => c.close());
  for (let i = 0; i < 20; i++) c.send({ type: 'recipients', digest: digest(`D${i}`), part: 0, parts: 2, delimiter: '', entries: ['dave@example.test'] });
  c.send({ type: 'recipients', digest: digest('D0'), part: 1, parts: 2, delimiter: '', entries: ['frank@example.test'] });
  await new Promise((r) => setTimeout(r, 300));
  t.equal(await status('frank@example.test'), 550, 'D0\'s first part was dropped when D1 began: D0 never completes');
  c.send({ type: 'recipients', digest: digest('D19'), part: 0, parts: 2, delimiter: '', entries: ['dave@example.test'] });
  c.send({ type: 'recipients', digest: digest('D19'), part: 1, parts: 2, delimiter: '', entries: ['erin@example.test'] });
  for (let i = 0; i < 100 && published() < 2; i++) await new Promise((r) => setTimeout(r, 50));
  t.equal(await status('dave@example.test'), 200, 'a list sent whole replaces the old one whole');
  t.equal(await status('alice@example.test'), 550);
});
