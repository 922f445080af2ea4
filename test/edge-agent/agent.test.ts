// The edge-agent against a scripted queue object (scripted-object.ts: it can send
// what the real object never would: corrupt transfers, redeliveries of an acked
// id) and the real embedded LMTP target.
import t, { type Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, type Agent } from '../../edge-agent/agent.ts';
import { validateConfig } from '../../edge-agent/agent-config.ts';
import { jsonLogger, silentLogger } from '../../edge-agent/ops/log.ts';
import { startMaildirTarget } from '../../local/maildir-target.ts';
import { defaultReportingMta } from '../../edge-agent/agent-config.ts';
import { isStoredExactly, maildirNew, waitFor } from '../helpers/mail.ts';
import { header, push, scriptedObject, TOKEN } from './scripted-object.ts';

async function setup(t: Test, stateDir?: string) {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-agent-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const target = await startMaildirTarget({ root: join(dir, 'maildir') });
  t.teardown(() => target.close());
  const object = await scriptedObject(t);
  const state = stateDir ?? join(dir, 'state');
  const agents: Agent[] = [];
  const agent = (): Agent => {
    const cfg = validateConfig({ workerUrl: object.url, token: TOKEN, target: target.url, name: 'test-agent', heartbeatMs: 1000 });
    const a = startAgent(cfg, state, process.env.DEBUG_AGENT ? jsonLogger() : silentLogger);
    agents.push(a);
    return a;
  };
  t.teardown(async () => { for (const a of agents) await a.stop(2000); });
  return { object, agent, box: (r: string) => join(target.root, r) };
}

const body = Buffer.from('Subject: hi\r\n\r\nhello \x80\xff\r\n', 'latin1');

t.test('a transfer whose SHA-256 does not match is nacked as corrupt and never stored', async (t) => {
  const { object, agent, box } = await setup(t);
  const conn = object.connection();
  agent();
  const c = await conn;
  const id = 'c'.repeat(32);
  push(c, header(id, body, ['alice@example.test'], 1, 'f'.repeat(64)), body, 7);
  const nack = await c.next('nack');
  t.match(nack, { type: 'nack', id, reason: 'corrupt', text: /SHA-256 mismatch/ });
  t.same(c.frames.filter((f) => f.type === 'ack'), [], 'no ack');
  t.same(await maildirNew(box('alice@example.test')), [], 'nothing stored: the final dot was never sent');
});

t.test('more bytes than announced is corrupt too', async (t) => {
  const { object, agent, box } = await setup(t);
  const conn = object.connection();
  agent();
  const c = await conn;
  const id = 'd'.repeat(32);
  push(c, { ...header(id, body, ['alice@example.test']), size: body.byteLength - 1 }, body);
  t.match(await c.next('nack'), { id, reason: 'corrupt', text: /more than the announced/ });
  t.same(await maildirNew(box('alice@example.test')), []);
});

t.test('after a crash, a redelivered id is acked from the journal, not delivered twice', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-agent-state-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { object, agent, box } = await setup(t, dir);
  const id = 'e'.repeat(32);
  const h = header(id, body, ['alice@example.test', 'nobody@bad..test']);

  let conn = object.connection();
  const first = agent();
  let c = await conn;
  push(c, h, body);
  const ack1 = await c.next('ack');
  t.match(ack1, { type: 'ack', id });
  const outcomes = ack1.type === 'ack' ? ack1.results.map((r) => [r.recipient, r.outcome]) : [];
  t.same(outcomes, [['alice@example.test', 'delivered'], ['nobody@bad..test', 'permfail']], 'per-recipient results');
  const [stored] = await waitFor('stored message', () => maildirNew(box('alice@example.test')), 1);
  t.ok(isStoredExactly(stored, { agent: 'test-agent', id, authservId: defaultReportingMta(), at: h.receivedAt }, body), 'byte-exact: our two headers, then the message');

  // The ack was "lost": the agent stops, a new one starts on the same state dir,
  // and the object redelivers the same id.
  await first.stop(1000);
  conn = object.connection();
  const second = agent();
  c = await conn;
  push(c, { ...h, attempt: 2 }, body);
  const ack2 = await c.next('ack');
  t.same(ack2, ack1, 'the same results, from the journal');
  t.equal(second.stats.fromJournal, 1);
  t.equal(second.stats.delivered, 0, 'no second LMTP delivery');
  t.equal((await maildirNew(box('alice@example.test'))).length, 1, 'exactly one copy');
});
