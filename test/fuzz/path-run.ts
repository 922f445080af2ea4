// The whole path fuzzed (#16): real Worker + queue object in workerd, the real agent in this
// process, the fuzzing LMTP target (test/helpers/fuzz-target.ts) behind it. Posts messages,
// waits until nothing is left to do, then checks each message's fate against what the target
// stored, and that the relay then goes quiet. Returns findings instead of asserting, so the
// tap test (path.test.ts) and the long mode (main.ts) share it.
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent } from '../../edge-agent/agent.ts';
import { validateConfig } from '../../edge-agent/agent-config.ts';
import { MAY_BE_DELIVERED } from '../../lmtp-proxy/client.ts';
import type { RecipientResult } from '../../protocol/wire.ts';
import { startTcpProxy } from '../edge-agent/tcp-proxy.ts';
import { startFuzzTarget } from '../helpers/fuzz-target.ts';
import { message } from '../helpers/mail.ts';
import { prng } from '../helpers/prng.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';

export const ADMIN = 'admin-token-fuzz-0123456789abcdef';
const HEARTBEAT_MS = 1_000;
/** A ping from the agent on the wire: 2 header bytes, 4 mask bytes, 'ping'. A pong: 2 + 'pong'. */
const PING_BYTES = 10;
const PONG_BYTES = 6;
const ACTIVE = ['incoming', 'queued', 'in-flight', 'deferred', 'bouncing'];

export interface PathRun {
  findings: string[];
  /** One line for people: what happened in this run. */
  summary: string;
}

interface AdminRow { id: string; state: string; results: RecipientResult[]; failure: string | null }
interface Event { event: string; id?: unknown; notes?: { recipient: string; text: string }[]; results?: string[] }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runPathFuzz(o: { seed: number; messages: number; settleMs?: number; idleMs?: number }): Promise<PathRun> {
  const findings: string[] = [];
  const r = prng(o.seed);
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-fuzz-'));
  const target = await startFuzzTarget(o.seed, { failRate: 0.08 });
  const w = await startTestWorker({
    verdictWaitMs: 0,
    vars: { ADMIN_TOKEN: ADMIN, RETRY_FIRST_MS: '200', RETRY_MAX_MS: '400', MAX_AGE_MS: '5000', MAX_UNSETTLED_LEASES: '5' },
  });
  // Between agent and Worker (its session and its body fetches): counts the bytes an idle link carries.
  const proxy = await startTcpProxy(Number(w.rt.url.port));
  const events: Event[] = [];
  const agent = startAgent(
    validateConfig({ workerUrl: `ws://127.0.0.1:${proxy.port}/agent`, token: AGENT_TOKEN, target: target.url, name: 'fuzz-agent', heartbeatMs: HEARTBEAT_MS, concurrency: 4 }),
    join(dir, 'state'), (event, fields = {}) => { events.push({ event, ...fields }); },
  );
  const admin = async <T>(path: string): Promise<T> => {
    const res = await fetch(new URL(path, w.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
    return (await res.json()) as T;
  };
  try {
    await agent.connected;
    // ---- post, while the agent delivers --------------------------------------------------
    const posted = new Map<string, { rcpt: string; sha256: string }>();
    for (let i = 0; i < o.messages; i++) {
      const rcpt = `user${Math.floor(r() * 3)}@example.test`;
      const body = message({ From: 'fuzz@example.net', To: rcpt, Subject: `fuzz ${o.seed}/${i}` },
        Buffer.from(`${'.line\r\n'.repeat(Math.floor(r() * 5))}${'x'.repeat(Math.floor(r() * 4000))}\r\n`, 'latin1'));
      const res = await w.post('fuzz@example.net', rcpt, body);
      const id = res.body.id;
      if (res.status !== 200 || typeof id !== 'string') findings.push(`post ${i}: ${res.status} ${JSON.stringify(res.body)}`);
      else posted.set(id, { rcpt, sha256: createHash('sha256').update(body).digest('hex') });
      if (r() < 0.3) await sleep(Math.floor(r() * 50));
    }
    // ---- until nothing is left to do ------------------------------------------------------
    const until = Date.now() + (o.settleMs ?? 40_000);
    let states: Record<string, number> = {};
    for (;;) {
      states = (await admin<{ states: Record<string, number> }>('/admin/queue')).states;
      if (ACTIVE.every((s) => (states[s] ?? 0) === 0)) break;
      if (Date.now() > until) {
        findings.push(`not settled within ${o.settleMs ?? 40_000} ms: ${JSON.stringify(states)}`);
        break;
      }
      await sleep(100);
    }
    // ---- idle: no frames but heartbeats, no log lines, no reconnects ----------------------
    const idleMs = o.idleMs ?? 3_000;
    const before = { up: proxy.bytes.up, down: proxy.bytes.down, events: events.length, logs: w.logs.length, accepted: proxy.accepted };
    await sleep(idleMs);
    const beats = Math.floor(idleMs / HEARTBEAT_MS) + 2;
    const up = proxy.bytes.up - before.up;
    const down = proxy.bytes.down - before.down;
    if (up > beats * PING_BYTES) findings.push(`idle: the agent sent ${up} bytes in ${idleMs} ms, more than ${beats} heartbeats`);
    if (down > beats * PONG_BYTES) findings.push(`idle: the object sent ${down} bytes in ${idleMs} ms, more than ${beats} pongs`);
    if (events.length > before.events) findings.push(`idle: the agent logged ${JSON.stringify(events.slice(before.events).map((e) => e.event))}`);
    if (w.logs.length > before.logs) findings.push(`idle: the object logged ${JSON.stringify(w.logs.slice(before.logs).map((l) => l.slice(0, 120)))}`);
    // The proxy also carries the agent's body fetches (GET /agent/body/<id>, bodies in R2): its
    // connections are not sessions; the agent counts those.
    if (agent.stats.sessions !== 1) findings.push(`reconnects: ${agent.stats.sessions} sessions, ${proxy.accepted} connections in all (the target's faults must not touch the agent's session)`);
    if (proxy.accepted > before.accepted) findings.push(`idle: ${proxy.accepted - before.accepted} new connections`);

    // ---- each message's fate --------------------------------------------------------------
    const dead = new Map((await admin<{ messages: AdminRow[] }>('/admin/messages?state=dead-letter&limit=500')).messages.map((m) => [m.id, m]));
    const others = (await admin<{ messages: AdminRow[] }>('/admin/messages?limit=500')).messages.filter((m) => m.state !== 'dead-letter');
    for (const m of others) findings.push(`${m.id}: left in state ${m.state}`);
    let delivered = 0;
    let duplicates = 0;
    for (const [id, p] of posted) {
      const copies = target.copies.get(`${id} ${p.rcpt}`) ?? [];
      const clear = copies.filter((c) => c.clear).length;
      const ambiguous = copies.length - clear;
      const wrong = copies.filter((c) => c.sha256 !== p.sha256).length;
      if (wrong > 0) findings.push(`${id}: ${wrong} stored copies differ from the bytes posted`);
      // An ambiguous copy is allowed only where the agent's result said it may have been stored.
      const maybe = events.filter((e) => e.id === id && (e.notes ?? []).some((n) => n.text.includes(MAY_BE_DELIVERED))).length;
      if (ambiguous > maybe) findings.push(`${id}: ${ambiguous} copies stored without a clear 2xx, but only ${maybe} results said "may have been delivered"`);
      const d = dead.get(id);
      if (d === undefined) {
        if (clear !== 1) findings.push(`${id}: gone from the queue (delivered) but the target answered 2xx for ${clear} copies${clear === 0 ? ': LOST' : ''}`);
        delivered++;
      } else {
        const res = d.results.find((x) => x.recipient === p.rcpt);
        if (!res || res.outcome === 'delivered' || res.text === '') findings.push(`${id}: dead-letter without the recipient's failure: ${JSON.stringify(d.results)}`);
        if (clear > 0) findings.push(`${id}: dead-letter, yet the target answered 2xx for ${clear} copies`);
      }
      duplicates += Math.max(0, copies.length - 1);
      // One object line per attempt at most (deferred, acked, failed), plus its arrival and its end.
      const attempts = events.filter((e) => e.id === id && e.event.startsWith('deliver.')).length;
      const lines = w.logs.filter((l) => l.includes(id)).length;
      if (lines > attempts + 2) findings.push(`${id}: ${lines} object log lines for ${attempts} delivery attempts`);
    }
    const faults = Object.entries(target.faults).filter(([, n]) => n > 0).map(([f, n]) => `${f}:${n}`).join(' ');
    return {
      findings,
      summary: `seed ${o.seed}: ${posted.size} posted, ${delivered} delivered, ${dead.size} dead-letter, ${duplicates} duplicate copies, ` +
        `${target.connections} target connections, faults ${faults || 'none'}, ${findings.length} findings`,
    };
  } finally {
    await agent.stop(1_000);
    await proxy.close();
    await target.close();
    await w.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
