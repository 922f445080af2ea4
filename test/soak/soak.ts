// The fault-injection soak: many messages through SMTP ingress -> Worker/DO (workerd)
// -> WebSocket -> agent (its own process) -> LMTP -> real Dovecot, while a seeded
// injector kills and restarts pieces. Afterwards every accepted message must be in
// Dovecot exactly once per valid recipient, byte-exact, and every unknown recipient
// refused to the sender or recorded as a permanent failure.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { SMTPServer } from 'smtp-server';
import { startIngress } from '../../local/ingress.ts';
import { workerHandoff } from '../../local/handoff.ts';
import { startWorkerRuntime } from '../../local/worker-runtime.ts';
import { AGENT_NODE_FLAGS, buildAgent } from '../../edge-agent/build.ts';
import { startDovecot } from '../fixtures/dovecot.ts';
import { sendSmtp } from '../helpers/mail.ts';
import { MAY_BE_DELIVERED } from '../../lmtp-proxy/client.ts';
import { readFile } from 'node:fs/promises';
import { prng } from '../helpers/prng.ts';
import { identify, KNOWN, makeMessage, type SoakMessage } from './mail.ts';
import { startFaultProxy } from './proxy.ts';

export interface SoakOptions {
  messages: number;
  seed: number;
  maxBytes: number;
  /** Mean time between faults. */
  faultEveryMs: number;
  /** Parallel SMTP senders. */
  senders: number;
  /** Give up (and report) after this long. */
  timeLimitMs: number;
  /** 'cycle': every kind of fault in turn, at least once each (the fast soak); default random. */
  faultOrder?: 'random' | 'cycle';
  log?: (line: string) => void;
}

export interface SoakSummary {
  seed: number;
  sent: number;
  accepted: number;
  refused: number;
  expectedCopies: number;
  delivered: number;
  duplicates: number;
  /**
   * Duplicates in LMTP's own window: the final reply was lost after the dot (the agent logged
   * "may have been delivered"), or the agent was killed during an attempt (kill -9 after the
   * dot, before the reply): the message was stored but nobody could know.
   */
  explainedDuplicates: number;
  lost: number;
  byteMismatches: number;
  strays: number;
  unknownRefusedAtSmtp: number;
  unknownPermfailJournaled: number;
  unknownUnaccounted: number;
  faults: Record<string, number>;
  queueLeft: Record<string, number>;
  wallMs: number;
  agentLog: string;
  /** The first few problems, each naming the message, recipient and queue id. */
  problems: string[];
  ok: boolean;
}

const TOKEN = 'soak-agent-token-0123456789';
const DEV = 'soak-dev-token-0123456789abc';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A stand-in for Dovecot answering 451 to every recipient (e.g. a storage outage). */
async function startTempfailLmtp(): Promise<{ port: number; close(): Promise<void> }> {
  const server = new SMTPServer({
    lmtp: true, disabledCommands: ['AUTH', 'STARTTLS'], authOptional: true, logger: false,
    onRcptTo(_a, _s, cb) { cb(Object.assign(new Error('4.3.0 Mailbox temporarily unavailable'), { responseCode: 451 })); },
  });
  // A client cut by the fault proxy mid-reply is expected here: without a listener, an EPIPE
  // on the server would end the whole soak.
  server.on('error', () => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.server.address();
  return { port: typeof addr === 'object' && addr ? addr.port : 0, close: () => new Promise((r) => server.close(() => r())) };
}

export async function runSoak(o: SoakOptions): Promise<SoakSummary> {
  const log = o.log ?? (() => {});
  const started = Date.now();
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-soak-'));
  const cleanups: (() => Promise<unknown>)[] = [];
  try {
    const dovecot = await startDovecot({ users: KNOWN });
    cleanups.push(() => dovecot.stop());
    const tempfail = await startTempfailLmtp();
    cleanups.push(() => tempfail.close());
    const lmtpProxy = await startFaultProxy(dovecot.lmtpPort);
    cleanups.push(() => lmtpProxy.close());
    const runtime = await startWorkerRuntime({
      persistDir: join(dir, 'worker'), agentTokens: [TOKEN], devIngressToken: DEV, verdictWaitMs: 3000,
      vars: { RETRY_FIRST_MS: '1000', RETRY_MAX_MS: '2000' },
    });
    cleanups.push(() => runtime.dispose());
    const wsProxy = await startFaultProxy(Number(runtime.url.port));
    cleanups.push(() => wsProxy.close());

    // The agent, as a process and as deployed (one JS file, --expose-gc): kill -9 is a real crash.
    // Built into this run's own dir: other tests may rebuild dist/ meanwhile.
    const agentFile = await buildAgent(join(dir, 'edge-agent.mjs'));
    const agentLogPath = join(dir, 'agent.log');
    const agentLog = createWriteStream(agentLogPath);
    let agent: ChildProcess | null = null;
    const startAgentProcess = (): void => {
      const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', ...AGENT_NODE_FLAGS, agentFile], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          PATH: process.env.PATH ?? '', MAILBRIDGE_WORKER_URL: `ws://127.0.0.1:${wsProxy.port}/agent`, MAILBRIDGE_TOKEN: TOKEN,
          MAILBRIDGE_TARGET: `lmtp://127.0.0.1:${lmtpProxy.port}`, MAILBRIDGE_STATE_DIR: join(dir, 'agent'),
          MAILBRIDGE_NAME: 'soak', MAILBRIDGE_HEARTBEAT_MS: '1000',
        },
      });
      child.stdout?.pipe(agentLog, { end: false });
      child.stderr?.pipe(agentLog, { end: false });
      agent = child;
    };
    const stopAgent = async (signal: NodeJS.Signals): Promise<void> => {
      const child = agent;
      agent = null;
      if (!child || child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await exited;
    };
    cleanups.push(() => stopAgent('SIGKILL'));
    startAgentProcess();

    const ingress = await startIngress({ port: 0, spoolDir: join(dir, 'spool'), maxBytes: 26 * 1024 * 1024, handoff: workerHandoff(runtime.url, DEV) });
    cleanups.push(() => ingress.close());

    // ---- faults, one at a time, on a seeded schedule ----
    const faults: Record<string, number> = {};
    const rnd = prng(o.seed);
    let injecting = true;
    const FAULTS: Record<string, () => Promise<void>> = {
      'agent kill -9': async () => { await stopAgent('SIGKILL'); await sleep(200 + rnd() * 1000); startAgentProcess(); },
      'dovecot restart': async () => { await dovecot.restart(); lmtpProxy.targetPort = dovecot.lmtpPort; },
      'websocket cut': async () => { wsProxy.cut(); },
      'websocket half-open': async () => { wsProxy.mode = 'blackhole'; await sleep(4500); wsProxy.mode = 'pass'; },
      'websocket slow': async () => { wsProxy.mode = 'slow'; await sleep(2000); wsProxy.mode = 'pass'; },
      'worker restart': async () => { await runtime.restart(); },
      'dovecot 451': async () => {
        lmtpProxy.targetPort = tempfail.port;
        lmtpProxy.cut();
        await sleep(1500 + rnd() * 1500);
        lmtpProxy.targetPort = dovecot.lmtpPort;
        lmtpProxy.cut();
      },
    };
    const names = Object.keys(FAULTS);
    let injected = 0;
    const injector = (async () => {
      // A cycle runs to its end even after the last message was answered: faults then hit delivery.
      while (injecting || (o.faultOrder === 'cycle' && injected < names.length)) {
        await sleep(o.faultEveryMs * (0.5 + rnd()));
        if (!injecting && o.faultOrder !== 'cycle') break;
        const pick = o.faultOrder === 'cycle' ? injected % names.length : Math.floor(rnd() * names.length);
        injected++;
        const name = names[pick] ?? 'websocket cut';
        faults[name] = (faults[name] ?? 0) + 1;
        log(`fault: ${name}`);
        await FAULTS[name]?.().catch((err: unknown) => log(`fault ${name} failed: ${String(err)}`));
      }
    })();

    // ---- send, retrying 4xx like a real MTA ----
    interface Outcome { msg: SoakMessage; accepted: boolean; ids: Map<string, string>; refusedAtSmtp: Set<string> }
    const outcomes: Outcome[] = [];
    let next = 0;
    const sender = async (): Promise<void> => {
      for (let i = next++; i < o.messages; i = next++) {
        const msg = makeMessage(i, o.seed, o.maxBytes);
        for (;;) {
          if (Date.now() - started > o.timeLimitMs) throw new Error(`time limit: message ${i} not accepted`);
          const res = await sendSmtp(ingress.port, msg.sender, msg.recipients, msg.raw);
          const first = res[0];
          if (first && first.code >= 200 && first.code < 300) {
            const refused = new Set([...first.text.matchAll(/refused <([^>]+)>|; <([^>]+)>/g)].map((m) => m[1] ?? m[2] ?? ''));
            const okRcpts = msg.recipients.filter((r) => !refused.has(r));
            const idList = /queued as ([0-9a-f ]+)/.exec(first.text)?.[1]?.trim().split(' ') ?? [];
            outcomes.push({ msg, accepted: true, ids: new Map(okRcpts.map((r, k) => [r, idList[k] ?? ''])), refusedAtSmtp: refused });
            break;
          }
          if (first && first.code >= 500) {
            outcomes.push({ msg, accepted: false, ids: new Map(), refusedAtSmtp: new Set(msg.recipients) });
            break;
          }
          await sleep(300);  // 4xx or no answer: try again later
        }
      }
    };
    await Promise.all(Array.from({ length: o.senders }, sender));
    injecting = false;
    await injector;
    log('all messages answered; draining');

    // ---- drain: everything healthy again, wait for an empty queue ----
    wsProxy.mode = 'pass';
    lmtpProxy.targetPort = dovecot.lmtpPort;
    if (agent === null) startAgentProcess();
    let queueLeft: Record<string, number> = {};
    for (const until = Date.now() + 120_000; Date.now() < until;) {
      queueLeft = await runtime.summary();
      // 'incoming' rows are ingests cut short by a Worker restart (the sender was answered with an
      // error and retried); housekeeping removes them. Only the rest is mail still to deliver.
      const live = (queueLeft.queued ?? 0) + (queueLeft['in-flight'] ?? 0) + (queueLeft.deferred ?? 0);
      if (live === 0) break;
      await sleep(250);
    }
    await stopAgent('SIGTERM');

    // ---- verify ----
    const copies = new Map<string, number>();
    let byteMismatches = 0;
    let strays = 0;
    const byId = new Map(outcomes.map((x) => [`${o.seed}-${x.msg.index}`, x]));
    for (const user of KNOWN) {
      for (const stored of await dovecot.readMessages(user)) {
        const found = identify(stored);
        const out = found ? byId.get(found.soakId) : undefined;
        if (!found || !out) { strays++; continue; }
        if (createHash('sha256').update(found.body).digest('hex') !== out.msg.sha256) byteMismatches++;
        const key = `${found.soakId} ${user}`;
        copies.set(key, (copies.get(key) ?? 0) + 1);
      }
    }
    // Which (queue id, recipient) had an attempt whose final reply was lost after the dot.
    // Also which ids had an attempt the agent never finished: it was killed (kill -9) during
    // it, perhaps after the final dot, before Dovecot's reply could be read and journaled.
    const ambiguous = new Set<string>();
    const attemptsSeen = new Map<string, Set<number>>();
    await new Promise<void>((r) => agentLog.end(r));
    for (const line of (await readFile(agentLogPath, 'utf8')).split('\n')) {
      if (!line.startsWith('{') || !line.includes('"deliver.')) continue;
      const e = JSON.parse(line) as { id?: string; attempt?: number; notes?: { recipient: string; text: string }[] };
      if (e.id === undefined) continue;
      if (e.attempt !== undefined) attemptsSeen.set(e.id, (attemptsSeen.get(e.id) ?? new Set()).add(e.attempt));
      for (const n of e.notes ?? []) if (n.text.includes(MAY_BE_DELIVERED)) ambiguous.add(`${e.id} ${n.recipient}`);
    }
    const unfinished = (id: string): boolean => {
      const seen = attemptsSeen.get(id) ?? new Set<number>();
      const last = Math.max(0, ...seen);
      for (let k = 1; k < last; k++) if (!seen.has(k)) return true;
      return false;
    };
    let expectedCopies = 0, delivered = 0, duplicates = 0, explainedDuplicates = 0, lost = 0;
    let unknownRefusedAtSmtp = 0, unknownPermfailJournaled = 0, unknownUnaccounted = 0;
    const problems: string[] = [];
    const problem = (what: string, x: Outcome, r: string): void => {
      if (problems.length < 20) problems.push(`${what}: message ${o.seed}-${x.msg.index} to ${r}, queue id ${x.ids.get(r) ?? '?'}`);
    };
    const journal = new DatabaseSync(join(dir, 'agent', 'journal.sqlite'));
    const permfail = journal.prepare('SELECT result FROM results WHERE id = ? AND recipient = ?');
    for (const x of outcomes) {
      for (const r of x.msg.recipients) {
        const n = copies.get(`${o.seed}-${x.msg.index} ${r}`) ?? 0;
        if (KNOWN.includes(r)) {
          if (!x.accepted) { if (n > 0) strays += n; continue; }
          expectedCopies++;
          if (n >= 1) delivered++;
          const qid = x.ids.get(r) ?? '';
          if (n > 1 && (ambiguous.has(`${qid} ${r}`) || unfinished(qid))) explainedDuplicates += n - 1;
          else if (n > 1) { duplicates += n - 1; problem(`${n} copies`, x, r); }
          if (n === 0) { lost++; problem('lost', x, r); }
          continue;
        }
        if (x.refusedAtSmtp.has(r)) { unknownRefusedAtSmtp++; continue; }
        const row = permfail.get(x.ids.get(r) ?? '', r);
        const result = row ? (JSON.parse(String(row.result)) as { outcome: string }) : null;
        if (result?.outcome === 'permfail') unknownPermfailJournaled++;
        else { unknownUnaccounted++; problem('unknown recipient unaccounted', x, r); }
      }
    }
    journal.close();
    const liveLeft = Object.entries(queueLeft).filter(([k, v]) => k !== 'dead-letter' && k !== 'incoming' && v > 0).length;
    const summary: SoakSummary = {
      seed: o.seed, sent: o.messages, accepted: outcomes.filter((x) => x.accepted).length, refused: outcomes.filter((x) => !x.accepted).length,
      expectedCopies, delivered, duplicates, explainedDuplicates, lost, byteMismatches, strays, unknownRefusedAtSmtp, unknownPermfailJournaled, unknownUnaccounted,
      faults, queueLeft, wallMs: Date.now() - started, agentLog: agentLogPath, problems,
      ok: lost === 0 && duplicates === 0 && byteMismatches === 0 && strays === 0 && unknownUnaccounted === 0 && liveLeft === 0,
    };
    return summary;
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    if (process.env.SOAK_KEEP === undefined) await rm(dir, { recursive: true, force: true });
  }
}

/** The summary table `npm run soak` prints. */
export function formatSummary(s: SoakSummary): string {
  const rows: [string, string | number][] = [
    ['seed', s.seed], ['sent', s.sent], ['accepted', s.accepted], ['refused (all recipients unknown)', s.refused],
    ['expected copies (accepted x valid recipients)', s.expectedCopies], ['delivered', s.delivered],
    ['duplicates', s.duplicates], ['duplicates in the LMTP window (reply lost after the dot, or agent killed mid-delivery)', s.explainedDuplicates], ['lost', s.lost], ['byte mismatches', s.byteMismatches], ['strays', s.strays],
    ['unknown recipients refused at SMTP', s.unknownRefusedAtSmtp], ['unknown recipients journaled as permfail', s.unknownPermfailJournaled],
    ['unknown recipients unaccounted', s.unknownUnaccounted],
    ['faults injected', Object.entries(s.faults).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'],
    ['queue left', Object.entries(s.queueLeft).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(', ') || 'empty'],
    ['wall time', `${(s.wallMs / 1000).toFixed(1)} s`], ['result', s.ok ? 'PASS' : 'FAIL'],
    ...s.problems.map((p): [string, string] => ['problem', p]),
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `| ${k.padEnd(w)} | ${v} |`).join('\n');
}
