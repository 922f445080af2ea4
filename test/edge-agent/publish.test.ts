// What the agent tells the object besides acks (protocol v2): the recipients list after
// every welcome (each shard's connection too) and again when the file changes, the empty
// list without a file, and `retry` once when the LMTP target comes back after being down.
import t from 'tap';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { listDigest } from '../../edge-agent/session/recipients.ts';
import type { AgentFrame, RecipientsFrame } from '../../protocol/wire.ts';
import { inProcess, until } from './in-process.ts';
import type { Conn } from './scripted-object.ts';

const recipientsOf = (c: Conn): RecipientsFrame[] => c.log.filter((f): f is RecipientsFrame => f.type === 'recipients');

t.test('the list goes out after the welcome on every shard connection, and again after an edit', async (t) => {
  const env = await inProcess(t);
  const file = join(t.testdir({ recipients: '# users\nAlice@Example.test\n@catchall.test\n' }), 'recipients');
  const a = env.object.connection();
  const b = env.object.connection();
  env.agent({ recipientsFile: file, recipientDelimiter: '+', shards: 2 }, { recipientsPollMs: 50 });
  const conns = [await a, await b];
  const first = ['@catchall.test', 'alice@example.test'];
  for (const c of conns) {
    await until('recipients sent', () => recipientsOf(c).length === 1);
    t.same(recipientsOf(c), [{ type: 'recipients', digest: listDigest(first), part: 0, parts: 1, delimiter: '+', entries: first }]);
  }

  writeFileSync(file, 'alice@example.test\nbob@example.test\n');
  for (const c of conns) await until('the edit republished', () => recipientsOf(c).length === 2);
  for (const c of conns) t.same(recipientsOf(c)[1]?.entries, ['alice@example.test', 'bob@example.test']);

  writeFileSync(file, 'alice@example.test\nbob@example.test\nno address here\n');
  await until('the bad edit reported', () => env.named('recipients.invalid').length === 1);
  t.match(env.named('recipients.invalid')[0], { error: new RegExp(`${file}:3: not an address`) });
  await new Promise((r) => setTimeout(r, 300));
  for (const c of conns) t.equal(recipientsOf(c).length, 2, 'the last good list stays; nothing sent');
});

t.test('without a recipients file: the empty list (no list at the object)', async (t) => {
  const env = await inProcess(t);
  const conn = env.object.connection();
  env.agent();
  const c = await conn;
  await until('recipients sent', () => recipientsOf(c).length === 1);
  t.same(recipientsOf(c), [{ type: 'recipients', digest: listDigest([]), part: 0, parts: 1, delimiter: '', entries: [] }]);
});

t.test('a bad recipients file stops the agent from starting', async (t) => {
  const env = await inProcess(t);
  const file = join(t.testdir({ recipients: 'alice@example.test\n<bob@example.test>\n' }), 'recipients');
  t.throws(() => env.agent({ recipientsFile: file }), { name: 'ConfigError', message: `recipientsFile: ${file}:2: not an address or @domain: "<bob@example.test>"` });
});

/** An LMTP target that refuses connections while down and greets and answers LHLO while up. */
async function switchableTarget(t: Tap) {
  const state = { up: false };
  const server = net.createServer((s) => {
    s.on('error', () => {});
    if (!state.up) return s.destroy();
    s.write('220 target ready\r\n');
    s.on('data', (d: Buffer) => {
      const l = d.toString('latin1');
      if (/^LHLO/i.test(l)) s.write('250 target\r\n');
      else if (/^QUIT/i.test(l)) s.end('221 bye\r\n');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise((r) => server.close(r)));
  return { state, url: `lmtp://127.0.0.1:${(server.address() as net.AddressInfo).port}` };
}
type Tap = Parameters<typeof inProcess>[0];

t.test('the target back after being down: one retry on each session, not one per observation', async (t) => {
  const env = await inProcess(t);
  const target = await switchableTarget(t);
  const a = env.object.connection();
  const b = env.object.connection();
  env.agent({ target: target.url, shards: 2 }, { probeEveryMs: 50 });
  const conns = [await a, await b];
  await until('the target seen down', () => env.named('target.down').length === 1);
  const retries = (c: Conn): AgentFrame[] => c.log.filter((f) => f.type === 'retry');
  t.same(conns.map(retries), [[], []], 'no retry while down, nor for the first observation');

  target.state.up = true;
  for (const c of conns) await c.next('retry');
  await new Promise((r) => setTimeout(r, 400));  // several more probes find it up
  t.same(conns.map((c) => retries(c).length), [1, 1], 'once per session');
  t.match(env.named('target.retry'), [{ sessions: 2 }]);

  target.state.up = false;
  await until('down again', () => env.named('target.down').length === 2);
  target.state.up = true;
  await until('up again', () => env.named('target.retry').length === 2);
  await until('retries arrived', () => conns.every((c) => retries(c).length === 2));
});
