// Frames fuzzed from agent to object (#16): raw WebSocket agents send the REAL queue object
// (workerd) mutated frames of every type, noise, binary frames, valid frames out of order and
// answers about other or unknown ids, while mail is posted. Then a well-behaved agent connects.
// Returns findings: the object must keep answering, close a bad connection with 1008 at most,
// and lose no message.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent } from '../../edge-agent/agent.ts';
import { validateConfig } from '../../edge-agent/agent-config.ts';
import { PROTOCOL_VERSION, type RecipientResult } from '../../protocol/wire.ts';
import { startLmtpPeer } from '../edge-agent/lmtp-peer.ts';
import { message, splitTrace } from '../helpers/mail.ts';
import { prng } from '../helpers/prng.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';
import { garbleText, pick, randomBytes, type Json } from './mutate.ts';
import type { PathRun } from './path-run.ts';

const ADMIN = 'admin-token-fuzz-0123456789abcdef';
/** Leases that end unanswered before the object gives a message up (the run's MAX_UNSETTLED_LEASES). */
const MAX_UNSETTLED = 3;
const ACTIVE = ['incoming', 'queued', 'in-flight', 'deferred', 'bouncing'];
/** Close codes a fuzzing agent may get from the object's side: ours (1008), the runtime's for bad UTF-8 or size, a clean 'bye'. */
const FAIR_CLOSES = [1000, 1007, 1008, 1009];
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));


export async function runObjectFrameFuzz(o: { seed: number; rounds: number }): Promise<PathRun> {
  const findings: string[] = [];
  const r = prng(o.seed);
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-fuzz-'));
  // AFFINITY_MS=0: leases a fuzzing agent dropped go to the good agent at once. Three leases
  // that end unanswered give a message up, so none waits minutes behind a long release delay.
  const w = await startTestWorker({
    verdictWaitMs: 0,
    vars: { ADMIN_TOKEN: ADMIN, RETRY_FIRST_MS: '200', RETRY_MAX_MS: '400', AFFINITY_MS: '0', MAX_UNSETTLED_LEASES: String(MAX_UNSETTLED), LOG_LEVEL: 'debug' },
  });
  const peer = await startLmtpPeer();
  const admin = async <T>(path: string): Promise<{ status: number; body: T }> => {
    const res = await fetch(new URL(path, w.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
    return { status: res.status, body: (await res.json()) as T };
  };
  const posted = new Map<string, Buffer>();
  const closes: Record<number, number> = {};
  // Acks the fuzzers sent that refuse a recipient for good: a cause a dead-letter may have.
  const refusedByFuzzers = new Set<string>();
  let frames = 0;
  let stop: (() => Promise<void>) | null = null;
  try {
    for (let round = 0; round < o.rounds; round++) {
      for (let i = Math.floor(r() * 3); i > 0; i--) {
        const body = message({ Subject: `frames ${o.seed}/${round}/${i}` }, Buffer.from(`${'y'.repeat(Math.floor(r() * 3000))}\r\n`, 'latin1'));
        const res = await w.post('s@example.net', `u${Math.floor(r() * 3)}@example.test`, body);
        if (res.status === 200 && typeof res.body.id === 'string') posted.set(res.body.id, body);
        else findings.push(`round ${round}: post answered ${res.status} ${JSON.stringify(res.body)}`);
      }
      const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
      try {
        await a.opened;
      } catch (err) {
        findings.push(`round ${round}: could not connect: ${String(err)}`);
        continue;
      }
      let ourClose = false;
      const seenIds = (): string[] => a.frames().flatMap((f) => (f.type === 'message' ? [f.id] : []));
      const someId = (): string => (r() < 0.7 && seenIds().length > 0 ? pick(r, seenIds()) : pick(r, [...posted.keys(), 'e'.repeat(32)]));
      const result = (rcpt: string): RecipientResult => ({
        recipient: rcpt, code: pick(r, [250, 451, 550, 0]), enhanced: null, text: 'fuzz', outcome: pick(r, ['delivered', 'tempfail', 'permfail'] as const),
      });
      const templates = (): Record<string, Json>[] => [
        { type: 'hello', v: PROTOCOL_VERSION, agent: 'fuzz', window: 1 + Math.floor(r() * 4), credit: 8 << 20, fetch: true },
        { type: 'credit', bytes: 1 + Math.floor(r() * (1 << 20)) },
        { type: 'ack', id: someId(), results: [{ ...result(`u${Math.floor(r() * 3)}@example.test`) }] },
        { type: 'nack', id: someId(), reason: pick(r, ['shutdown', 'corrupt', 'unavailable']), text: 'fuzz' },
        { type: 'retry' },
        { type: 'bounced', id: someId(), status: pick(r, ['sent', 'deferred', 'failed']), code: 250, text: 'fuzz' },
        { type: 'recipients', digest: '0'.repeat(64), part: 0, parts: 2, delimiter: '+', entries: ['@example.test'] },
      ];
      // A refusing ack, plain or mutated, is a cause the fuzzer made for its message's dead-letter.
      const noted = (f: Record<string, Json>): Record<string, Json> => {
        if (f.type === 'ack' && JSON.stringify(f.results).includes('"permfail"')) refusedByFuzzers.add(String(f.id));
        return f;
      };
      if (r() < 0.9) a.send(JSON.stringify(templates()[0]));
      for (let k = 3 + Math.floor(r() * 8); k > 0 && a.ws.readyState === a.ws.OPEN; k--) {
        frames++;
        const x = r();
        // Valid frames, in any order (a second hello, acks for other ids) ...
        if (x < 0.6) a.send(JSON.stringify(noted(pick(r, templates().slice(1, 6)))));
        // ... mutated ones, noise, huge texts ...
        else if (x < 0.9) a.send(garbleText(r, noted(pick(r, templates()))));
        // ... and binary frames, which no agent may send.
        else a.ws.send(randomBytes(r), { binary: true });
        await sleep(Math.floor(r() * 20));
      }
      await sleep(20 + Math.floor(r() * 100));
      if (a.ws.readyState === a.ws.OPEN) {
        ourClose = true;
        if (r() < 0.2) a.ws.terminate();
        else a.close();
      }
      const end = await Promise.race([a.closed, sleep(5_000).then(() => null)]);
      if (end === null) findings.push(`round ${round}: the socket did not close within 5 s`);
      else if (!ourClose) {
        closes[end.code] = (closes[end.code] ?? 0) + 1;
        if (!FAIR_CLOSES.includes(end.code)) findings.push(`round ${round}: the object's side closed with ${end.code} ${end.reason}`);
      }
      if (round % 5 === 4) {
        const health = await fetch(new URL('/healthz', w.rt.url)).then((x) => x.status, (e: unknown) => String(e));
        const queue = await admin('/admin/queue').then((x) => x.status, (e: unknown) => String(e));
        if (health !== 200 || queue !== 200) findings.push(`round ${round}: /healthz ${health}, /admin/queue ${queue}`);
      }
    }

    // ---- a well-behaved agent delivers what is left --------------------------------------
    const agent = startAgent(
      validateConfig({ workerUrl: w.agentUrl(), token: AGENT_TOKEN, target: peer.url, name: 'good-agent', heartbeatMs: 1000 }),
      join(dir, 'state'), () => {},
    );
    stop = () => agent.stop(1_000);
    const until = Date.now() + 20_000;
    for (;;) {
      const { states } = (await admin<{ states: Record<string, number> }>('/admin/queue')).body;
      if (ACTIVE.every((s) => (states[s] ?? 0) === 0)) break;
      if (Date.now() > until) {
        findings.push(`not settled within 20 s after the fuzz: ${JSON.stringify(states)}`);
        break;
      }
      await sleep(100);
    }
    const events = w.logs.flatMap((l) => { try { return [JSON.parse(l) as Record<string, unknown>]; } catch { return []; } });
    const agentOf = new Map(events.filter((e) => e.event === 'agent.hello').map((e) => [e.session, e.agent]));
    // Leases the object gave fuzzing sessions (LOG_LEVEL=debug), each of which may end
    // unanswered: its frame may never reach a fuzzer that closes at once, so the object's word.
    const leasedToFuzzers = new Map<string, number>();
    for (const e of events) {
      if (e.event !== 'message.leased' || agentOf.get(e.session) === 'good-agent') continue;
      const id = String(e.id);
      leasedToFuzzers.set(id, (leasedToFuzzers.get(id) ?? 0) + 1);
    }
    const deadRows = (await admin<{ messages: { id: string; failure: string | null; results: RecipientResult[] }[] }>('/admin/messages?state=dead-letter&limit=500')).body.messages;
    const dead = new Set(deadRows.map((m) => m.id));
    // Each dead-letter needs a cause a fuzzer made: leases it dropped often enough in a row, or
    // an ack of its that refused a recipient. Anything else (expired, a refusal nobody sent)
    // is the object giving up a message on its own.
    for (const m of deadRows) {
      const leases = leasedToFuzzers.get(m.id) ?? 0;
      const refused = m.results.some((x) => x.outcome === 'permfail');
      const cause = m.failure === 'attempts' ? leases >= MAX_UNSETTLED
        : m.failure === 'refused' ? refused && refusedByFuzzers.has(m.id) && leases > 0 : false;
      if (!cause) {
        findings.push(`${m.id}: dead-letter (${m.failure}) without a cause the fuzzers made: ${leases} leases to fuzzers, ` +
          `${refusedByFuzzers.has(m.id) ? 'a' : 'no'} refusing ack sent, results ${JSON.stringify(m.results).slice(0, 300)}`);
      }
    }
    const ackedBy = new Map(events.filter((e) => e.event === 'message.acked').map((e) => [e.id, agentOf.get(e.session)]));
    const copies = new Map<string, Buffer[]>();
    for (const s of peer.stored) {
      const p = splitTrace(s);
      copies.set(p?.id ?? '?', [...(copies.get(p?.id ?? '?') ?? []), p?.rest ?? s]);
    }
    let good = 0;
    for (const [id, body] of posted) {
      // The floor: a message no fuzzer was ever given is the good agent's, delivered once.
      if (!leasedToFuzzers.has(id) && ackedBy.get(id) !== 'good-agent') {
        findings.push(`${id}: never leased to a fuzzer, yet not delivered by the good agent (${dead.has(id) ? 'dead-letter' : `acked by ${String(ackedBy.get(id))}`})`);
      }
      if (dead.has(id)) continue;
      const by = ackedBy.get(id);
      if (by === undefined) findings.push(`${id}: gone from the queue without an ack: LOST`);
      else if (by === 'good-agent') {
        good++;
        const c = copies.get(id) ?? [];
        if (c.length !== 1 || !c[0]?.equals(body)) findings.push(`${id}: acked by the good agent with ${c.length} copies stored${c.length === 1 ? ', bytes differ' : ''}`);
      }
    }
    return {
      findings,
      summary: `seed ${o.seed}: ${o.rounds} connections, ${frames} fuzzed frames, object closes ${JSON.stringify(closes)}, ${posted.size} posted, ` +
        `${good} delivered by the good agent (${[...posted.keys()].filter((id) => !leasedToFuzzers.has(id)).length} never leased to a fuzzer), ` +
        `${posted.size - good - dead.size} acked by fuzzers, ${dead.size} dead-letter, ${findings.length} findings`,
    };
  } finally {
    await stop?.();
    await peer.close();
    await w.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
