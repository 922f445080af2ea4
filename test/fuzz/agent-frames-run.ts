// Frames fuzzed from object to agent (#16): a scripted object sends the REAL agent (in this
// process) whole messages mixed with mutated frames, noise, chunks outside a message, bodies
// whose bytes, size or chunk count do not match their header, a second welcome. Returns
// findings: the agent must answer a bad frame that names one message for that message alone
// (issue #22), close a session with 1008 only for a frame that names none, come back after a
// backoff, send only frames the object's parser takes, and store only messages that arrived whole.
import { createHash, randomBytes as cryptoBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent } from '../../edge-agent/agent.ts';
import { validateConfig } from '../../edge-agent/agent-config.ts';
import { encodeFrame, parseObjectFrame, PROTOCOL_VERSION, refusedObjectFrame, type RefusedFrame } from '../../protocol/wire.ts';
import { startLmtpPeer } from '../edge-agent/lmtp-peer.ts';
import { header, msgId, push, scriptedObject, TOKEN, type Conn } from '../edge-agent/scripted-object.ts';
import { splitTrace } from '../helpers/mail.ts';
import { prng } from '../helpers/prng.ts';
import { garbleText, pick, randomBytes, type Json } from './mutate.ts';
import type { PathRun } from './path-run.ts';
import { shortReconnects } from './reconnect-gaps.ts';

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
/** maxReconnectMs here: every wait between sessions is 50-100 ms (backoff.ts). */
const MAX_RECONNECT_MS = 100;

export async function runAgentFrameFuzz(o: { seed: number; rounds: number }): Promise<PathRun> {
  const findings: string[] = [];
  const r = prng(o.seed);
  const cleanups: (() => unknown)[] = [];
  const unhandled = (err: unknown): void => { findings.push(`unhandled rejection: ${String(err)}`); };
  process.on('unhandledRejection', unhandled);
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-fuzz-'));
  const peer = await startLmtpPeer();
  const object = await scriptedObject({ teardown: (fn) => { cleanups.push(fn); } });
  const events: { event: string; [k: string]: unknown }[] = [];
  const agent = startAgent(
    validateConfig({ workerUrl: object.url, token: TOKEN, target: peer.url, name: 'fuzzed-agent', heartbeatMs: 1000, maxReconnectMs: MAX_RECONNECT_MS, concurrency: 4 }),
    join(dir, 'state'), (event, fields = {}) => { events.push({ event, at: performance.now(), ...fields }); },
  );
  /** SHA-256 of each message sent whole and true to its header, by id. */
  const whole = new Map<string, string>();
  const agentCloses: Record<number, number> = {};
  let n = 0;
  try {
    /** When each session got its welcome: the agent's backoff shows between its close and the next. */
    const arrivals: number[] = [];
    const connection = (): Promise<Conn> => object.connection().then((c) => { arrivals.push(performance.now()); return c; });
    let next = connection();
    for (let round = 0; round < o.rounds; round++) {
      const c: Conn | null = await Promise.race([next, sleep(5_000).then(() => null)]);
      if (c === null) {
        findings.push(`round ${round}: the agent did not connect again within 5 s`);
        break;
      }
      next = connection();
      let ourClose = false;
      const owed: RefusedFrame[] = [];
      const closed = new Promise<number>((res) => c.ws.once('close', (code) => res(code)));
      const body = (): Buffer => Buffer.from(`Subject: f${n}\r\n\r\n${cryptoBytes(Math.floor(r() * 3000)).toString('base64')}\r\n`, 'latin1');
      for (let k = 2 + Math.floor(r() * 8); k > 0 && c.ws.readyState === c.ws.OPEN; k--) {
        const id = msgId(++n);
        const x = r();
        if (x < 0.35) {
          const b = body();
          whole.set(id, sha(b));
          push(c, header(id, b, [`rcpt${n % 3}@example.test`]), b, 1 + Math.floor(r() * 2000));
        } else if (x < 0.55) {
          // A transfer that is not what its header says: other bytes, fewer, more, another count.
          const b = body();
          const h = header(id, b, ['rcpt@example.test']);
          const bad = pick(r, [
            () => Buffer.from(b.toString('latin1').replace(/.$/s, '#'), 'latin1'),
            () => b.subarray(0, Math.floor(r() * b.length)),
            () => Buffer.concat([b, Buffer.from('extra')]),
          ])();
          if (r() < 0.5) push(c, h, bad);
          else {
            // The right bytes in one chunk, an end frame whose count may be wrong: the agent
            // checks bytes (size, SHA-256), not the count, so this one may well be stored.
            whole.set(id, sha(b));
            c.ws.send(encodeFrame(h));
            c.ws.send(b, { binary: true });
            c.ws.send(encodeFrame({ type: 'end', id, chunks: 1 + Math.floor(r() * 3) }));
          }
        } else if (x < 0.85) {
          const b = body();
          const templates: Record<string, Json>[] = [
            { type: 'welcome', v: PROTOCOL_VERSION, session: 'a'.repeat(32), window: 4, maxChunk: 1 << 20 },
            JSON.parse(JSON.stringify(header(id, b, ['rcpt@example.test']))) as Record<string, Json>,
            { type: 'end', id, chunks: 1 },
            { type: 'bounce', id, sender: 's@example.net', receivedAt: 0, reason: 'refused', results: [], headers: '' },
          ];
          const text = garbleText(r, pick(r, templates));
          c.ws.send(text);
          // A frame that names its message is answered for that message alone (issue #22).
          const named = parseObjectFrame(text) === null ? refusedObjectFrame(text) : null;
          if (named !== null && named.type !== 'end') owed.push(named);
        } else c.ws.send(randomBytes(r), { binary: true });
        await sleep(Math.floor(r() * 30));
      }
      await sleep(100 + Math.floor(r() * 200));
      const answer = (f: RefusedFrame): boolean => c.log.some((a) => (f.type === 'message'
        ? a.type === 'nack' && a.id === f.id && a.reason === 'corrupt' && /^message frame refused: /.test(a.text)
        : a.type === 'bounced' && a.id === f.id && a.status === 'deferred' && /^bounce frame refused: /.test(a.text)));
      for (const until = Date.now() + 2_000; c.ws.readyState === c.ws.OPEN && !owed.every(answer) && Date.now() < until;) await sleep(20);
      if (c.ws.readyState === c.ws.OPEN) {
        ourClose = true;
        c.ws.close(1000, 'round over');
      }
      const code = await closed;
      if (!ourClose) {
        agentCloses[code] = (agentCloses[code] ?? 0) + 1;
        if (code !== 1008) findings.push(`round ${round}: the agent closed with ${code}, not 1008`);
      } else {
        // The session lasted: each frame it could not take for one message was answered for that message.
        for (const f of owed.filter((x) => !answer(x))) findings.push(`round ${round}: ${f.type} frame ${f.id} refused (${f.why}) without its answer`);
      }
    }
    // Deliveries of whole messages may still be running: let them end before counting.
    await sleep(1_000);
    for (const text of object.refused) findings.push(`the agent sent a frame the object refuses: ${text.slice(0, 200)}`);
    if (object.conns.length > o.rounds + 1) findings.push(`${object.conns.length} sessions for ${o.rounds} rounds: a reconnect loop`);
    // The wait after each close (the agent's session.closed) is at least the one it announced,
    // itself at least half the first backoff step.
    const closes = events.filter((x) => x.event === 'session.closed' && typeof x.retryInMs === 'number')
      .map((x) => ({ at: Number(x.at), retryInMs: Number(x.retryInMs) }));
    for (const c of closes) if (c.retryInMs < MAX_RECONNECT_MS / 2) findings.push(`a wait of ${c.retryInMs} ms announced, under the backoff's least`);
    const short = shortReconnects(closes, arrivals);
    if (short.length > 0) findings.push(`${short.length} reconnects sooner than the backoff allows: ${JSON.stringify(short.slice(0, 3))}`);
    const stored = peer.stored.map((s) => splitTrace(s));
    for (const p of stored) {
      if (p === null) findings.push('a stored message without our trace header');
      else if (whole.get(p.id) !== sha(p.rest)) findings.push(`${p.id}: stored, but it was not sent whole and true to its header`);
    }
    const ids = stored.map((p) => p?.id);
    if (new Set(ids).size !== ids.length) findings.push('a message stored twice');
    const violations = events.filter((e) => e.event === 'session.violation').length;
    const refusedOne = events.filter((e) => e.event === 'frame.refused').length;
    return {
      findings,
      summary: `seed ${o.seed}: ${object.conns.length} sessions, ${n} items sent, ${whole.size} whole messages, ${peer.stored.length} stored, ` +
        `${violations} violations seen by the agent, ${refusedOne} frames refused for one message, agent closes ${JSON.stringify(agentCloses)}, ${findings.length} findings`,
    };
  } finally {
    await agent.stop(1_000);
    for (const fn of cleanups.reverse()) await fn();
    await peer.close();
    await rm(dir, { recursive: true, force: true });
    process.off('unhandledRejection', unhandled);
  }
}
