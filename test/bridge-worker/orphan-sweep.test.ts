// The orphan sweep (bridge-worker/relay-do.ts): R2 objects that no row owns (a put whose
// ingestStored never committed: email() cut off after its put, the RPC lost) are deleted by
// the queue object from its alarm, one bounded page at a time, only once they are older than
// the grace period (1 h), so a put whose ingestStored is still on its way is never touched.
// R2 cannot backdate an object: ageBodies() edits Miniflare's record while workerd is down.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { PROTOCOL_VERSION, type MessageFrame } from '../../protocol/wire.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';

const HOUR = 60 * 60_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const someId = () => randomBytes(16).toString('hex');

t.test('an R2 object no row owns, older than the grace period, is deleted; a young one, one a row owns and another shard\'s are kept', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { ORPHAN_SWEEP_MS: '300' } });
  t.teardown(() => w.stop());
  const body = Buffer.from('Subject: owned\r\n\r\nkept\r\n');
  const owned = String((await w.post('s@sender.test', 'alice@example.test', body)).body.id);
  const bucket = await w.rt.mf.getR2Bucket('BODIES');
  // What email() leaves behind when it is cut off after its put, before ingestStored.
  const orphan = `queue/${someId()}`;
  const young = `queue/${someId()}`;
  const otherShard = `queue-1/${someId()}`;
  for (const k of [orphan, young, otherShard]) await bucket.put(k, 'a body whose ingest never came');
  await w.ageBodies([`queue/${owned}`, orphan, otherShard], 2 * HOUR);

  for (let i = 0; i < 100 && (await w.bodyKeys()).includes(orphan); i++) await sleep(100);
  t.notOk((await w.bodyKeys()).includes(orphan), 'the old orphan is deleted');
  const swept = w.logs.filter((l) => l.includes('"event":"bodies.orphans"'));
  t.match(swept[0], /"prefix":"queue\/".*"orphans":1/, 'and the sweep says so');
  await sleep(1000);  // a few more sweeps
  t.same(await w.bodyKeys(), [`queue/${owned}`, otherShard, young].sort(),
    'kept: the message\'s body (a row owns it), the young orphan (its ingest may be on its way), another shard\'s (not this object\'s prefix)');
  t.ok(w.logs.filter((l) => l.includes('"event":"bodies.orphans"')).length === 1, 'later sweeps find nothing');

  // The message whose body was kept is delivered whole.
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await a.opened;
  a.send({ type: 'hello', v: PROTOCOL_VERSION, agent: 'sweep', window: 1, credit: 1 << 20, fetch: true });
  const got = await a.received(owned);
  t.ok(got.subarray(got.length - body.length).equals(body), 'the owned body, intact');
  const m = a.messageFrame(owned) as MessageFrame;
  a.send({ type: 'ack', id: owned, results: m.recipients.map((recipient) => ({ recipient, code: 250, enhanced: null, text: 'ok', outcome: 'delivered' as const })) });
  for (let i = 0; i < 50 && (await w.bodyKeys()).includes(`queue/${owned}`); i++) await sleep(50);
  t.same(await w.bodyKeys(), [otherShard, young].sort(), 'acked: its body deleted with it');
  a.close();
  await a.closed;
});

t.test('ORPHAN_SWEEP_MS is checked like every duration', async (t) => {
  const { parseConfig } = await import('../../bridge-worker/config.ts');
  t.equal(parseConfig({}).orphanSweepMs, HOUR, 'hourly by default');
  t.throws(() => parseConfig({ ORPHAN_SWEEP_MS: 'often' }), { message: /ORPHAN_SWEEP_MS: must be an integer number of ms/ });
});
