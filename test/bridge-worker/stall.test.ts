// Issue #16 at the object: one message cannot hold up the queue. A message whose lease keeps
// ending unanswered is spaced out and then given up (never a tight loop); a bad answer for the
// message at the head of the queue defers that one, and after a restart the rest goes at once.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MessageFrame } from '../../protocol/wire.ts';
import { startWorkerRuntime } from '../../local/worker-runtime.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, DEV_TOKEN, startTestWorker } from '../helpers/worker.ts';

const ADMIN = 'admin-token-0123456789abcdef';

async function hello(url: string, name = 'stall-test', window = 4): Promise<RawAgent> {
  const a = new RawAgent(url, AGENT_TOKEN);
  await a.hello({ agent: name, window, credit: 8 << 20, fetch: true });
  return a;
}

const leasedIds = (a: RawAgent): string[] => a.frames().filter((f): f is MessageFrame => f.type === 'message').map((f) => f.id);
const ended = async (a: RawAgent, id: string): Promise<true> => { await a.received(id); return true; };
const ack = (m: MessageFrame) => ({ type: 'ack' as const, id: m.id, results: m.recipients.map((recipient) => ({ recipient, code: 250, enhanced: '2.0.0', text: 'ok', outcome: 'delivered' as const })) });

t.test('a message whose lease keeps ending unanswered is spaced out, then given up; the next message is not held up', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0, vars: { MAX_UNSETTLED_LEASES: '3', AFFINITY_MS: '0', ADMIN_TOKEN: ADMIN } });
  t.teardown(() => w.stop());
  const bad = String((await w.post('s@example.net', 'alice@example.test', Buffer.from('Subject: bad\r\n\r\nx\r\n'))).body.id);
  const leases: number[] = [];
  const started = Date.now();
  // Each connection takes the message and drops without an answer (a crash in mid-delivery).
  for (let i = 0; i < 3; i++) {
    const a = await hello(w.agentUrl());
    await a.until((s) => s.some((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === bad) || false, 15_000);
    leases.push(Date.now() - started);
    a.ws.terminate();
    await a.closed;
  }
  t.ok((leases[2] ?? 0) - (leases[1] ?? 0) >= 1500, `the third lease waited for its backoff (leases at ${leases.join(', ')} ms)`);
  const row = async (): Promise<Record<string, unknown>> => {
    const r = await fetch(new URL(`/admin/messages/${bad}`, w.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
    return (await r.json()) as Record<string, unknown>;
  };
  for (let i = 0; i < 100 && (await row()).state !== 'dead-letter'; i++) await new Promise((r) => setTimeout(r, 50));
  t.match(await row(), { state: 'dead-letter', failure: 'attempts', lastError: /3 attempts in a row ended without an answer/ },
    'given up after MAX_UNSETTLED_LEASES, kept for the operator (this agent has no bounce relay)');
  t.ok(w.logs.some((l) => l.includes('"event":"message.failed"') && l.includes(bad) && l.includes('"reason":"attempts"')), 'logged as a warning with its reason');
  // The queue moves: a new message goes to the next connection at once, the given-up one never again.
  const next = String((await w.post('s@example.net', 'alice@example.test', Buffer.from('Subject: next\r\n\r\nx\r\n'))).body.id);
  const a = await hello(w.agentUrl());
  await ended(a, next);
  t.same(leasedIds(a), [next], 'only the new message is offered');
  a.close();
});

t.test('a bad answer for the message at the head defers it; after a restart the rest is delivered at once', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-stall-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const logs: string[] = [];
  const start = () => startWorkerRuntime({
    persistDir: dir, agentTokens: [AGENT_TOKEN], devIngressToken: DEV_TOKEN, allowedDomains: [],
    maxMessageBytes: 1 << 20, verdictWaitMs: 0, vars: {}, onLog: (l) => logs.push(l),
  });
  let rt = await start();
  const post = async (tag: string): Promise<string> => {
    const url = new URL('/dev/email', rt.url);
    url.searchParams.set('from', 's@example.net');
    url.searchParams.set('to', 'alice@example.test');
    const res = await fetch(url, { method: 'POST', body: `Subject: ${tag}\r\n\r\nx\r\n`, headers: { Authorization: `Bearer ${DEV_TOKEN}` } });
    return String(((await res.json()) as Record<string, unknown>).id);
  };
  const head = await post('head');
  const rest = [await post('r1'), await post('r2'), await post('r3')];
  const agentUrl = () => new URL('/agent', rt.url).href.replace(/^http/, 'ws');
  const a = await hello(agentUrl(), 'stall-test', 1);
  const m = await a.until((s) => s.map((x) => (x.kind === 'frame' && x.frame.type === 'message' ? x.frame : null)).find((f) => f?.id === head) ?? false);
  await ended(a, head);
  // The answer a long multi-line target reply once produced: over the wire's limits.
  a.send({ ...ack(m), results: [{ recipient: 'alice@example.test', code: 452, enhanced: '4.2.2', text: 'x'.repeat(70_000), outcome: 'tempfail' }] });
  await a.until((s) => s.some((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === rest[0]) || false);
  t.pass('the connection stays and the next message follows');
  a.ws.terminate();
  await a.closed;

  await rt.dispose();
  rt = await start();
  const b = await hello(agentUrl(), 'stall-test', 4);
  for (const id of rest) {
    const f = await b.until((s) => s.map((x) => (x.kind === 'frame' && x.frame.type === 'message' ? x.frame : null)).find((x) => x?.id === id) ?? false);
    await ended(b, id);
    b.send(ack(f));
  }
  t.notOk(leasedIds(b).includes(head), 'the deferred head waits for its backoff; the rest went at once');
  for (let i = 0; i < 100 && ((await rt.summary())['in-flight'] ?? 0) > 0; i++) await new Promise((r) => setTimeout(r, 50));
  t.match(await rt.summary(), { queued: 0, 'in-flight': 0, deferred: 1 }, 'only the bad one is left, deferred');
  b.close();
  await rt.dispose();
});
