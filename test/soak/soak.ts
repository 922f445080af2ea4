// The fault-injection soak: many messages through SMTP ingress -> Worker/DO (workerd)
// -> WebSocket -> agent (its own process) -> LMTP -> real Dovecot, while a seeded
// injector kills and restarts pieces. Afterwards every recipient of every message the
// senders got 250 for is accounted for: delivered to Dovecot (once, byte-exact), refused at
// SMTP, bounced (one RFC 3464 DSN at the soak's bounce relay), dead-lettered (the queue's
// dead-letter state, its failure recorded) or deleted by the operator, who meanwhile holds,
// releases, deletes, replays, retries and flushes (operator.ts). R2 is a process of its own
// behind a proxy that fails puts and gets (r2-faults.ts). Anything else is lost, and fails the run.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SMTPServer } from 'smtp-server';
import { startIngress, type Handoff } from '../../local/ingress.ts';
import { workerHandoff } from '../../local/handoff.ts';
import { startWorkerRuntime } from '../../local/worker-runtime.ts';
import { AGENT_NODE_FLAGS, buildAgent } from '../../edge-agent/package/build.ts';
import { startDovecot } from '../../bench/lib/dovecot.ts';
import { sendSmtp } from '../helpers/mail.ts';
import { prng } from '../helpers/prng.ts';
import { startSmtpSink } from '../helpers/smtp-sink.ts';
import { startR2Host } from '../../local/r2-remote.ts';
import { account, type AgentLife, type Books, type Outcome, type QueueLookup, type Sent } from './account.ts';
import { operatorLine, startOperator, type OperatorCounts } from './operator.ts';
import { startR2FaultProxy, type R2FaultProxy } from './r2-faults.ts';
import { KNOWN, makeMessage } from './mail.ts';
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
  /**
   * Messages of at most this many bytes stay in the queue object (INLINE_MAX_BYTES); larger ones go
   * through R2. Default 16 KiB: about half the sizes drawn (1 KiB to maxBytes, log-uniform) take
   * each path, so R2's faults still meet bodies in R2.
   */
  inlineMaxBytes?: number;
  /** Mean time between operator actions (hold, release, delete, replay, retry, flush); 0: none. Default faultEveryMs / 2. */
  operatorEveryMs?: number;
  log?: (line: string) => void;
}

export interface SoakSummary extends Books {
  seed: number;
  sent: number;
  /** Messages that got 250 / a 5xx for every recipient. */
  accepted: number;
  refused: number;
  /** Recipients of every message answered (each ends in exactly one outcome of Books). */
  recipients: number;
  faults: Record<string, number>;
  /** SMTP answers 4xx (or none) the senders retried after: a temporary refusal, never a loss. */
  refusedTemporarily: number;
  /** Per operator action: done / refused with a clear error / Worker unreachable. */
  operator: OperatorCounts;
  /** Held messages the operator released before the end; replayed messages by where they ended. */
  releasedAtEnd: number;
  replayed: Record<string, number>;
  r2: R2FaultProxy['counts'];
  /** The agent's nacks of a message whose body it could not read whole. */
  bodyNacks: number;
  queueLeft: Record<string, number>;
  /** Queue states still live at the end (incoming, queued, in-flight, deferred, bouncing): must be none. */
  unsettled: number;
  wallMs: number;
  agentLog: string;
  ok: boolean;
}

const TOKEN = 'soak-agent-token-0123456789';
const DEV = 'soak-dev-token-0123456789abc';
const ADMIN = 'soak-admin-token-0123456789';
const DOVEADM_KEY = 'soak-doveadm-key-0123456789';
/** The states a message is still on its way in: the queue has settled when none is left. */
const LIVE = ['incoming', 'queued', 'in-flight', 'deferred', 'bouncing'];
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
    // The doveadm HTTP API on, for the agent's check after a lost reply (issue #23).
    const dovecot = await startDovecot({ users: KNOWN, doveadmApiKey: DOVEADM_KEY });
    await writeFile(join(dir, 'doveadm.key'), `${DOVEADM_KEY}\n`);
    cleanups.push(() => dovecot.stop());
    const tempfail = await startTempfailLmtp();
    cleanups.push(() => tempfail.close());
    const lmtpProxy = await startFaultProxy(dovecot.lmtpPort);
    cleanups.push(() => lmtpProxy.close());
    // R2 in its own workerd, behind a proxy that can fail its puts and gets.
    const r2Host = await startR2Host(join(dir, 'r2'));
    cleanups.push(() => r2Host.dispose());
    const r2 = await startR2FaultProxy(r2Host.address);
    cleanups.push(() => r2.close());
    // Retries within seconds, for deferred mail and for bounces the relay put off alike; nothing
    // should reach the age limit in a soak, so a message failing as expired would be a finding.
    const runtime = await startWorkerRuntime({
      persistDir: join(dir, 'worker'), agentTokens: [TOKEN], devIngressToken: DEV, verdictWaitMs: 3000, bodiesRemote: r2.address,
      vars: { RETRY_FIRST_MS: '1000', RETRY_MAX_MS: '2000', MAX_AGE_MS: '600000', ADMIN_TOKEN: ADMIN, INLINE_MAX_BYTES: String(o.inlineMaxBytes ?? 16 * 1024) },
    });
    cleanups.push(() => runtime.dispose());
    const wsProxy = await startFaultProxy(Number(runtime.url.port));
    cleanups.push(() => wsProxy.close());
    // The bounce relay: a real SMTP server that keeps every DSN with its envelope.
    const relay = await startSmtpSink();
    cleanups.push(() => relay.close());
    // The recipients list the agent publishes: KNOWN from the agent's start until a third of the
    // messages were sent, then withdrawn (an empty file): unknown users are refused at SMTP by
    // the list, then by the synchronous verdict, or accepted and bounced.
    const recipientsFile = join(dir, 'recipients');
    await writeFile(recipientsFile, `${KNOWN.join('\n')}\n`);

    // The agent, as a process and as deployed (one JS file, --expose-gc): kill -9 is a real crash.
    // Built into this run's own dir: other tests may rebuild dist/ meanwhile.
    const agentFile = await buildAgent(join(dir, 'edge-agent.mjs'));
    const agentLogPath = join(dir, 'agent.log');
    const agentLog = createWriteStream(agentLogPath);
    let agent: ChildProcess | null = null;
    const lives: AgentLife[] = [];
    const startAgentProcess = (): void => {
      const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', ...AGENT_NODE_FLAGS, agentFile], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          PATH: process.env.PATH ?? '', MAILBRIDGE_WORKER_URL: `ws://127.0.0.1:${wsProxy.port}/agent`, MAILBRIDGE_TOKEN: TOKEN,
          MAILBRIDGE_TARGET: `lmtp://127.0.0.1:${lmtpProxy.port}`, MAILBRIDGE_STATE_DIR: join(dir, 'agent'),
          MAILBRIDGE_NAME: 'soak', MAILBRIDGE_HEARTBEAT_MS: '1000',
          MAILBRIDGE_BOUNCE_RELAY: relay.url, MAILBRIDGE_REPORTING_MTA: 'soak.example.test', MAILBRIDGE_RECIPIENTS_FILE: recipientsFile,
          MAILBRIDGE_DOVEADM_URL: dovecot.doveadmUrl ?? '', MAILBRIDGE_DOVEADM_API_KEY_FILE: join(dir, 'doveadm.key'),
        },
      });
      child.stdout?.pipe(agentLog, { end: false });
      child.stderr?.pipe(agentLog, { end: false });
      const life: AgentLife = { start: Date.now(), end: Infinity, killed: false };
      lives.push(life);
      child.once('exit', (_code, signal) => { life.end = Date.now(); life.killed = signal === 'SIGKILL'; });
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

    const queueInfo = async (): Promise<{ agents: unknown[] }> => {
      const res = await fetch(new URL('/admin/queue', runtime.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
      return res.ok ? ((await res.json()) as { agents: unknown[] }) : { agents: [] };
    };
    // The stand-in hands each recipient's copy off on its own: the ids it got back, per sender
    // (each message but those from <> has its own), so a transaction answered 4xx leaves its
    // stored copies on record (one may be bounced before the sender's retry: account.ts).
    const handedOff = new Map<string, Map<string, string>>();
    const handoff = workerHandoff(runtime.url, DEV);
    const recording: Handoff = {
      send: async (sender, recipient, message) => {
        const res = await handoff.send(sender, recipient, message);
        if (res.ok && sender !== '') handedOff.get(sender)?.set(recipient, res.id);
        return res;
      },
    };
    const ingress = await startIngress({ port: 0, spoolDir: join(dir, 'spool'), maxBytes: 26 * 1024 * 1024, handoff: recording });
    cleanups.push(() => ingress.close());

    // ---- faults, one at a time, on a seeded schedule ----
    const faults: Record<string, number> = {};
    const rnd = prng(o.seed);
    let injecting = true;
    const r2Fault = async (hits: () => number): Promise<void> => {
      const from = hits();
      await sleep(1000 + rnd() * 1000);
      for (const until = Date.now() + 7000; hits() - from < 2 && Date.now() < until;) await sleep(50);
    };
    const FAULTS: Record<string, () => Promise<void>> = {
      'agent kill -9': async () => { await stopAgent('SIGKILL'); await sleep(200 + rnd() * 1000); startAgentProcess(); },
      // R2's faults come early in a cycle: the fast soak's messages are all answered before its later ones.
      // Each R2 fault lasts 1-2 s, and on until it hit two calls (at most 8 s): one that hit nothing proves nothing.
      'r2 put failing': async () => { r2.put = 'fail'; await r2Fault(() => r2.counts.putsFailed); r2.put = 'pass'; },
      'r2 get failing': async () => { r2.get = 'fail'; await r2Fault(() => r2.counts.getsFailed); r2.get = 'pass'; },
      'r2 get cut': async () => { r2.get = 'cut'; await r2Fault(() => r2.counts.getsCut); r2.get = 'pass'; },
      'dovecot restart': async () => { await dovecot.restart(); lmtpProxy.targetPort = dovecot.lmtpPort; },
      'websocket cut': async () => { wsProxy.cut(); },
      'websocket half-open': async () => { wsProxy.mode = 'blackhole'; await sleep(4500); wsProxy.mode = 'pass'; },
      'websocket slow': async () => { wsProxy.mode = 'slow'; await sleep(2000); wsProxy.mode = 'pass'; },
      'worker restart': async () => { await runtime.restart(); },
      'bounce relay 451': async () => { relay.refuse = { code: 451, text: '4.3.0 Relay busy, try again later' }; await sleep(500 + rnd() * 1000); relay.refuse = null; },
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
    const inject = async (): Promise<void> => {
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
    };

    // ---- the operator, on a seeded schedule of its own ----
    const outcomes: Sent[] = [];
    const opRnd = prng(o.seed * 7919 + 1);
    const operator = startOperator({
      url: () => runtime.url, token: ADMIN, rnd: opRnd, log,
      ids: () => outcomes.flatMap((x) => [...x.ids.values()]).filter((id) => id !== ''),
      // Mail from <> proves "never bounced, dead-lettered" (soak.test.ts): the operator leaves it be.
      spared: (id) => outcomes.some((x) => x.msg.sender === '' && [...x.ids.values()].includes(id)),
    });
    const operatorEveryMs = o.operatorEveryMs ?? o.faultEveryMs / 2;
    const operate = async (): Promise<void> => {
      while (injecting && operatorEveryMs > 0) {
        await sleep(operatorEveryMs * (0.5 + opRnd()));
        if (injecting) await operator.act();
      }
    };

    // ---- send, retrying 4xx like a real MTA ----
    let refusedTemporarily = 0;
    let next = 0;
    const listUntil = Math.floor(o.messages / 3);
    const sender = async (limit: number): Promise<void> => {
      for (let i = next; i < limit; i = next) {
        next++;
        if (i === listUntil) await writeFile(recipientsFile, '# list withdrawn\n');
        const msg = makeMessage(i, o.seed, o.maxBytes);
        const tempfailed: NonNullable<Sent['tempfailed']> = [];
        for (;;) {
          if (Date.now() - started > o.timeLimitMs) throw new Error(`time limit: message ${i} not accepted`);
          const ids = new Map<string, string>();
          if (msg.sender !== '') handedOff.set(msg.sender, ids);
          const startedAt = Date.now();
          const res = await sendSmtp(ingress.port, msg.sender, msg.recipients, msg.raw);
          handedOff.delete(msg.sender);
          const answeredAt = Date.now();
          const first = res[0];
          if (first && first.code >= 200 && first.code < 300) {
            const refused = new Set([...first.text.matchAll(/refused <([^>]+)>|; <([^>]+)>/g)].map((m) => m[1] ?? m[2] ?? ''));
            const okRcpts = msg.recipients.filter((r) => !refused.has(r));
            const idList = /queued as ([0-9a-f ]+)/.exec(first.text)?.[1]?.trim().split(' ') ?? [];
            outcomes.push({ msg, accepted: true, ids: new Map(okRcpts.map((r, k) => [r, idList[k] ?? ''])), refusedAtSmtp: refused, tempfailed, answeredAt });
            break;
          }
          if (first && first.code >= 500) {
            outcomes.push({ msg, accepted: false, ids: new Map(), refusedAtSmtp: new Set(msg.recipients), tempfailed, answeredAt });
            break;
          }
          if (first && first.code >= 400) tempfailed.push({ startedAt, answeredAt, ids });
          refusedTemporarily++;
          await sleep(300);  // 4xx or no answer: try again later
        }
      }
    };
    // Home is down when the first messages arrive, and has published no list yet: accepted with
    // nobody to ask, their unknown recipients (and the one from <>) are bounced or dead-lettered later.
    const early = Math.max(3, Math.ceil(o.messages / 50));
    await Promise.all(Array.from({ length: o.senders }, () => sender(early)));
    startAgentProcess();
    // The list reaches the object right after the agent's welcome: wait for that, so the list phase is one.
    for (const until = Date.now() + 10_000; Date.now() < until && (await queueInfo()).agents.length === 0;) await sleep(50);
    await sleep(100);
    const injector = inject();
    const operating = operate();
    await Promise.all(Array.from({ length: o.senders }, () => sender(o.messages)));
    injecting = false;
    await injector;
    await operating;
    log('all messages answered; waiting for the queue to settle');

    // ---- settle: everything healthy again, wait until no message is on its way ----
    wsProxy.mode = 'pass';
    lmtpProxy.targetPort = dovecot.lmtpPort;
    relay.refuse = null;
    r2.put = 'pass';
    r2.get = 'pass';
    if (agent === null) startAgentProcess();
    // The operator releases what is still held before leaving it to settle.
    await operator.releaseAll();
    let queueLeft: Record<string, number> = {};
    let unsettled = 0;
    for (const until = Math.max(started + o.timeLimitMs, Date.now() + 30_000); ;) {
      queueLeft = await runtime.summary();
      unsettled = LIVE.reduce((n, st) => n + (queueLeft[st] ?? 0), 0);
      if (unsettled === 0 || Date.now() >= until) break;
      await sleep(250);
    }
    await stopAgent('SIGTERM');

    // ---- account for every recipient ----
    await new Promise<void>((r) => agentLog.end(r));
    const stored = [];
    for (const user of KNOWN) for (const bytes of await dovecot.readMessages(user)) stored.push({ user, bytes });
    const lookup: QueueLookup = async (id) => {
      if (!/^[0-9a-f]{32}$/.test(id)) return null;
      const res = await fetch(new URL(`/admin/messages/${id}`, runtime.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
      if (res.status === 404) return null;
      if (!res.ok) throw new Error(`admin API: GET /admin/messages/${id}: HTTP ${res.status}`);
      const m = (await res.json()) as { state: string; failure: string | null; receivedAt: number };
      return { state: m.state, failure: m.failure, receivedAt: m.receivedAt };
    };
    const replayed: Record<string, number> = {};
    const agentText = await readFile(agentLogPath, 'utf8');
    // The agent's nacks for a body it could not read whole (R2's get failing or cut on the way).
    const bodyNacks = agentText.split('\n').filter((l) => l.includes('"event":"deliver.corrupt"') && l.includes('reading the message body failed')).length;
    const books = await account({
      seed: o.seed, sent: outcomes, stored, dsns: relay.messages, agentLog: agentText, lives, lookup, doveadm: true,
      deletedByOperator: operator.deleted, replayedAs: operator.replayed,
      onOutcome: (qids, outcome: Outcome) => { if (qids.some((id) => operator.replayed.has(id))) replayed[outcome] = (replayed[outcome] ?? 0) + 1; },
    });
    books.problems.push(...operator.problems.slice(0, 10));
    const accepted = outcomes.filter((x) => x.accepted);
    const summary: SoakSummary = {
      ...books, seed: o.seed, sent: o.messages, accepted: accepted.length, refused: outcomes.length - accepted.length,
      recipients: outcomes.reduce((n, x) => n + x.msg.recipients.length, 0),
      faults, refusedTemporarily, operator: operator.counts, releasedAtEnd: operator.releasedAtEnd, replayed, r2: { ...r2.counts }, bodyNacks,
      queueLeft, unsettled, wallMs: Date.now() - started, agentLog: agentLogPath,
      ok: books.lost === 0 && books.duplicates === 0 && books.bounceDuplicates === 0 && books.badBounces === 0 &&
        books.byteMismatches === 0 && books.strays === 0 && unsettled === 0 && books.held === 0 && books.deletedYetDelivered === 0 && books.givenUp === 0 &&
        operator.problems.length === 0,
    };
    return summary;
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    if (process.env.SOAK_KEEP === undefined) await rm(dir, { recursive: true, force: true });
  }
}

/** The run in one line: where every recipient went, the duplicates, the verdict. */
export function summaryLine(s: SoakSummary): string {
  const n = (v: number): string => v.toLocaleString('en-US');
  return `seed ${s.seed}: ${n(s.recipients)} recipients of ${n(s.sent)} messages: ${n(s.delivered)} delivered, ` +
    `${n(s.refusedAtSmtp)} refused at SMTP, ${n(s.bounced)} bounced, ${n(s.deadLettered)} dead-lettered, ` +
    `${n(s.deletedByOperator)} deleted by the operator, ${n(s.held)} held, ${n(s.lost)} lost; ` +
    `duplicates ${n(s.duplicates)} (+${n(s.explainedDuplicates)} in the LMTP window), ` +
    `duplicate bounces ${n(s.bounceDuplicates)} (+${n(s.explainedBounceDuplicates)} killed before the journal, ` +
    `+${n(s.tempfailDsns)} copies of attempts answered 4xx); ` +
    `${s.ok ? 'PASS' : 'FAIL'}`;
}

/** The summary table `npm run soak` prints, ending with summaryLine. */
export function formatSummary(s: SoakSummary): string {
  const rows: [string, string | number][] = [
    ['seed', s.seed], ['messages sent / accepted (250) / refused (5xx for every recipient)', `${s.sent} / ${s.accepted} / ${s.refused}`],
    ['recipients (each in exactly one of the next seven)', s.recipients],
    ['delivered (in Dovecot, byte-exact)', s.delivered],
    ['refused at SMTP', s.refusedAtSmtp],
    ['bounced (one DSN from <> to the sender)', s.bounced],
    ['dead-lettered (failure recorded)', `${s.deadLettered} (from <>: ${s.nullSenderDeadLettered}; given up with a sender to tell: ${s.givenUp})`],
    ['deleted by the operator', s.deletedByOperator],
    ['held at the end (never released)', s.held],
    ['delivered after the operator deleted it', s.deletedYetDelivered],
    ['LOST', s.lost],
    ['duplicate deliveries: unexplained / in the LMTP window', `${s.duplicates} / ${s.explainedDuplicates}`],
    ['duplicate bounces: unexplained / agent killed before its journal', `${s.bounceDuplicates} / ${s.explainedBounceDuplicates}`],
    ['DSNs for copies of attempts answered 4xx (refused before the retry, or the last attempt refused at SMTP)', s.tempfailDsns],
    ['bad bounces, byte mismatches, strays', `${s.badBounces}, ${s.byteMismatches}, ${s.strays}`],
    ['faults injected', Object.entries(s.faults).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'],
    ['R2 calls: puts (failed) / gets (failed, cut); the agent\'s nacks of a body not read whole', `${s.r2.puts} (${s.r2.putsFailed}) / ${s.r2.gets} (${s.r2.getsFailed}, ${s.r2.getsCut}); ${s.bodyNacks}`],
    ['SMTP answers 4xx the senders retried (refused temporarily)', s.refusedTemporarily],
    ['operator actions: done/refused(/unreachable)', operatorLine(s.operator)],
    ['operator: released at the end / replayed messages ended', `${s.releasedAtEnd} / ${Object.entries(s.replayed).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`],
    ['queue left', Object.entries(s.queueLeft).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(', ') || 'empty'],
    ['unsettled (incoming, queued, in-flight, deferred, bouncing)', s.unsettled],
    ['wall time', `${(s.wallMs / 1000).toFixed(1)} s`], ['result', s.ok ? 'PASS' : 'FAIL'],
    ...s.problems.map((p): [string, string] => ['problem', p]),
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  return `${rows.map(([k, v]) => `| ${k.padEnd(w)} | ${v} |`).join('\n')}\n${summaryLine(s)}`;
}
