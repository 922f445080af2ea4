// The orphan sweep (bridge-worker/relay-do.ts): R2 objects that no row owns (a put whose
// ingestStored never committed: email() cut off after its put, the RPC lost) are deleted by
// the queue object from its alarm, one bounded page at a time, only once they are older than
// the grace period (1 h), so a put whose ingestStored is still on its way is never touched.
// R2 cannot backdate an object: ageBodies() edits Miniflare's record while workerd is down.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startR2Host } from '../../local/r2-remote.ts';
import type { MessageFrame } from '../../protocol/wire.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, ageR2Objects, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const HOUR = 60 * 60_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const someId = () => randomBytes(16).toString('hex');
/** The id of queue object `name`, as email() stamps it on the bodies it puts for that object. */
const objectId = async (w: TestWorker, name: string): Promise<string> => {
  const ns = await w.rt.mf.getDurableObjectNamespace('RELAY');
  return ns.idFromName(name).toString();
};

t.test('an R2 object no row owns, older than the grace period, is deleted; a young one, one a row owns and another shard\'s are kept', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { ORPHAN_SWEEP_MS: '300' } });
  t.teardown(() => w.stop());
  const body = Buffer.from('Subject: owned\r\n\r\nkept\r\n');
  const owned = String((await w.post('s@sender.test', 'alice@example.test', body)).body.id);
  const bucket = await w.rt.mf.getR2Bucket('BODIES');
  // What email() leaves behind when it is cut off after its put, before ingestStored: stamped
  // with the id of the object it was put for, as email() stamps it.
  const stamp = { customMetadata: { owner: await objectId(w, 'queue') } };
  const orphan = `queue/${someId()}`;
  const young = `queue/${someId()}`;
  const otherShard = `queue-1/${someId()}`;
  for (const k of [orphan, young]) await bucket.put(k, 'a body whose ingest never came', stamp);
  await bucket.put(otherShard, 'a body whose ingest never came', { customMetadata: { owner: await objectId(w, 'queue-1') } });
  // Put before bodies were stamped (or by a Worker that does not stamp): never provably ours.
  const unstamped = `queue/${someId()}`;
  await bucket.put(unstamped, 'whose?');
  await w.ageBodies([`queue/${owned}`, orphan, otherShard, unstamped], 2 * HOUR);

  for (let i = 0; i < 100 && (await w.bodyKeys()).includes(orphan); i++) await sleep(100);
  t.notOk((await w.bodyKeys()).includes(orphan), 'the old orphan is deleted');
  const swept = w.logs.filter((l) => l.includes('"event":"bodies.orphans"'));
  t.match(swept[0], /"prefix":"queue\/".*"orphans":1/, 'and the sweep says so');
  await sleep(1000);  // a few more sweeps
  t.same(await w.bodyKeys(), [`queue/${owned}`, otherShard, young, unstamped].sort(),
    'kept: the message\'s body (a row owns it), the young orphan (its ingest may be on its way), another shard\'s (not this object\'s prefix), an unstamped one');
  t.ok(w.logs.filter((l) => l.includes('"event":"bodies.orphans"')).length === 1, 'later sweeps find nothing');

  // The message whose body was kept is delivered whole.
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await a.hello({ agent: 'sweep', window: 1, credit: 1 << 20, fetch: true });
  const got = await a.received(owned);
  t.ok(got.subarray(got.length - body.length).equals(body), 'the owned body, intact');
  const m = a.messageFrame(owned) as MessageFrame;
  a.send({ type: 'ack', id: owned, results: m.recipients.map((recipient) => ({ recipient, code: 250, enhanced: null, text: 'ok', outcome: 'delivered' as const })) });
  for (let i = 0; i < 50 && (await w.bodyKeys()).includes(`queue/${owned}`); i++) await sleep(50);
  t.same(await w.bodyKeys(), [otherShard, young, unstamped].sort(), 'acked: its body deleted with it');
  a.close();
  await a.closed;
});

t.test('ORPHAN_SWEEP_MS is checked like every duration', async (t) => {
  const { parseConfig } = await import('../../bridge-worker/config.ts');
  t.equal(parseConfig({}).orphanSweepMs, HOUR, 'hourly by default');
  t.throws(() => parseConfig({ ORPHAN_SWEEP_MS: 'often' }), { message: /ORPHAN_SWEEP_MS: must be an integer number of ms/ });
});

t.test('two deployments bound to one bucket: neither sweep deletes the other\'s bodies, each deletes its own orphans', async (t) => {
  // A production Worker and a staging (or renamed, or `wrangler dev`) one: another script name,
  // so other Durable Object ids for the same shard names, and the same `queue/<id>` keys.
  const r2Dir = await mkdtemp(join(tmpdir(), 'mailbridge-shared-r2-'));
  t.teardown(() => rm(r2Dir, { recursive: true, force: true }));
  let host = await startR2Host(r2Dir);
  t.teardown(() => host.dispose());
  const start = (name: string) => startTestWorker({ name, verdictWaitMs: 0, bodiesRemote: host.address, vars: { ORPHAN_SWEEP_MS: '300' } });
  const prod = await start('mailbridge');
  t.teardown(() => prod.stop());
  const staging = await start('mailbridge-staging');
  t.teardown(() => staging.stop());
  const ids = { prod: await objectId(prod, 'queue'), staging: await objectId(staging, 'queue') };
  t.not(ids.prod, ids.staging, 'the two deployments\' queue objects have different ids');

  const live = async (w: TestWorker, tag: string) => `queue/${String((await w.post('s@sender.test', 'alice@example.test', Buffer.from(`Subject: ${tag}\r\n\r\n${tag}\r\n`))).body.id)}`;
  const prodLive = await live(prod, 'prod');
  const stagingLive = await live(staging, 'staging');
  const bucket = await host.bucket();
  const keys = async () => (await bucket.list()).objects.map((o) => o.key).sort();
  t.same(await keys(), [prodLive, stagingLive].sort(), 'both bodies in the one bucket');
  t.same((await bucket.head(prodLive))?.customMetadata, { owner: ids.prod }, 'email() stamps its put with the object\'s id');
  const prodOrphan = `queue/${someId()}`;
  const stagingOrphan = `queue/${someId()}`;
  await bucket.put(prodOrphan, 'cut off', { customMetadata: { owner: ids.prod } });
  await bucket.put(stagingOrphan, 'cut off', { customMetadata: { owner: ids.staging } });
  const all = [prodLive, stagingLive, prodOrphan, stagingOrphan];

  // Every object two hours old: past the grace period for either sweep.
  const port = Number(host.address.split(':').pop());
  await host.dispose();
  await ageR2Objects(r2Dir, all, 2 * HOUR);
  host = await startR2Host(r2Dir, port);
  const back = await host.bucket();
  const now = async () => (await back.list()).objects.map((o) => o.key).sort();
  for (let i = 0; i < 150 && (await now()).some((k) => k === prodOrphan || k === stagingOrphan); i++) await sleep(100);
  t.same(await now(), [prodLive, stagingLive].sort(), 'each sweep deleted its own orphan, and only that');
  await sleep(1500);  // more rounds of both sweeps
  t.same(await now(), [prodLive, stagingLive].sort(), 'neither deployment\'s live body was deleted by the other\'s sweep');
  for (const w of [prod, staging]) t.ok(w.logs.some((l) => /"event":"bodies\.orphans".*"notOurs":[12],"orphans":1/.test(l)), 'a sweep saw the other\'s objects and left them');
});
