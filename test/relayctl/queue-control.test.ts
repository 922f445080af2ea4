// Queue control as Postfix users know it (postsuper -h/-H/-d, postqueue -f), through relayctl's
// main() against the real object in workerd: a held message is never offered to an agent until
// released, delete removes only what no agent holds, flush makes deferred mail due at once.
import t from 'tap';
import { Writable } from 'node:stream';
import type { MessageFrame } from '../../protocol/wire.ts';
import { main } from '../../relayctl/cli.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const ADMIN = 'admin-token-0123456789abcdef';

async function relayctl(w: TestWorker, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const sink = (f: (s: string) => void) => new Writable({ write(c: Buffer, _e, cb) { f(c.toString()); cb(); } });
  const code = await main(args, {
    stdout: sink((s) => { out += s; }), stderr: sink((s) => { err += s; }),
    env: { RELAYCTL_URL: w.rt.url.href, RELAYCTL_TOKEN: ADMIN },
  } as Parameters<typeof main>[1]);
  return { code, out, err };
}

const offered = (a: RawAgent): string[] => a.frames().filter((f): f is MessageFrame => f.type === 'message').map((f) => f.id);

t.test('hold, release, delete, flush', async (t) => {
  // A first retry an hour away: only flush can make a deferred message due now.
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { ADMIN_TOKEN: ADMIN, RETRY_FIRST_MS: '3600000', RETRY_MAX_MS: '3600000' } });
  t.teardown(() => w.stop());
  const post = async (tag: string): Promise<string> => String((await w.post('s@example.net', 'alice@example.test', Buffer.from(`Subject: ${tag}\r\n\r\nx\r\n`))).body.id);
  const held = await post('held');
  const gone = await post('gone');
  const plain = await post('plain');

  t.match(await relayctl(w, 'hold', held), { code: 0, out: `${held}: -> hold\n` });
  t.match(await relayctl(w, '--json', 'delete', gone), { code: 0 });
  t.same(JSON.parse((await relayctl(w, '--json', 'hold', held)).out || '{}'), {}, 'nothing on stdout for a failure');
  t.match(await relayctl(w, 'hold', held), { code: 1, err: /cannot hold .*: it is hold, not queued or deferred \(it is already held\)/ });
  t.match(await relayctl(w, 'release', plain), { code: 1, err: /it is queued, not hold/ });
  t.match(await relayctl(w, '--json', 'status'), { code: 0, out: /"hold": 1/ });

  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  t.teardown(() => a.close());
  await a.hello({ agent: 'control', window: 8, credit: 8 << 20, fetch: true });
  const m = await a.until((s) => s.map((x) => (x.kind === 'frame' && x.frame.type === 'message' ? x.frame : null)).find((f) => f?.id === plain) ?? false);
  await a.received(plain);
  t.match(await relayctl(w, 'delete', plain), { code: 1, err: /it is in-flight.*an agent has it now/ }, 'never what an agent holds');
  await new Promise((r) => setTimeout(r, 300));
  t.same(offered(a), [plain], 'the held and the deleted messages are not offered');

  // A tempfail: deferred for an hour, then flushed.
  a.send({ type: 'ack', id: plain, results: [{ recipient: m.recipients[0] ?? '', code: 451, enhanced: '4.3.0', text: 'busy', outcome: 'tempfail' }] });
  for (let i = 0; i < 50 && !(await relayctl(w, '--json', 'status')).out.includes('"deferred": 1'); i++) await new Promise((r) => setTimeout(r, 50));
  t.match(JSON.parse((await relayctl(w, '--json', 'flush')).out), { flushed: 1 });
  await a.until((s) => s.filter((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === plain).length === 2 || false);
  t.pass('flush: the deferred message is offered again at once');

  t.match(await relayctl(w, '--json', 'release', held), { code: 0, out: /"state": "queued"/ });
  await a.until((s) => s.some((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === held) || false);
  t.pass('released: offered at once');
  t.match(await relayctl(w, 'show', gone), { code: 1, err: /no message \w+ in the queue/ }, 'the deleted message is gone');
});

t.test('status shows every state with its bytes; "oldest" is the oldest message still owed', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { ADMIN_TOKEN: ADMIN } });
  t.teardown(() => w.stop());
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  t.teardown(() => a.close());
  await a.hello({ agent: 'status', window: 8, credit: 8 << 20, fetch: true });
  // The oldest message goes to dead-letter (refused, no bounce relay): it is no longer owed.
  const dead = String((await w.post('s@example.net', 'dave@example.test', Buffer.from('Subject: dead\r\n\r\nx\r\n'))).body.id);
  const m = await a.until((s) => s.map((x) => (x.kind === 'frame' && x.frame.type === 'message' ? x.frame : null)).find((f) => f?.id === dead) ?? false);
  a.send({ type: 'ack', id: dead, results: [{ recipient: m.recipients[0] ?? '', code: 550, enhanced: '5.1.1', text: 'no such user', outcome: 'permfail' }] });
  for (let i = 0; i < 100 && !(await relayctl(w, '--json', 'status')).out.includes('"dead-letter": 1'); i++) await new Promise((r) => setTimeout(r, 50));
  a.close();
  await a.closed;
  await new Promise((r) => setTimeout(r, 20));
  const held = String((await w.post('s@example.net', 'alice@example.test', Buffer.from('Subject: held\r\n\r\nx\r\n'))).body.id);
  t.match(await relayctl(w, 'hold', held), { code: 0 });
  const heldAt = Number(JSON.parse((await relayctl(w, '--json', 'show', held)).out).receivedAt);

  const text = await relayctl(w, 'status');
  t.equal(text.code, 0, text.err);
  for (const [st, n] of [['queued', 0], ['in-flight', 0], ['deferred', 0], ['hold', 1], ['bouncing', 0], ['bounced', 0], ['dead-letter', 1], ['incoming', 0]] as const) {
    t.match(text.out, new RegExp(`^${st}\\s+${n}${n > 0 ? '  \\([\\d.]+ K?i?B, \\d+ B in R2\\)' : ''}$`, 'm'), `${st}: ${n}`);
  }
  const s = JSON.parse((await relayctl(w, '--json', 'status')).out) as { oldest: number; stored: Record<string, { bodies: number; bytes: number }> };
  t.equal(s.oldest, heldAt, 'the held message, not the older dead-lettered one');
  t.match(s.stored, { hold: { bodies: 1 }, 'dead-letter': { bodies: 1 } });
  t.ok((s.stored['dead-letter']?.bytes ?? 0) > 0, 'dead-letter\'s bytes are counted');
});
