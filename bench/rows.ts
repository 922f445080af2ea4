// `npm run bench:rows [-- --n=200 --deferred-n=100 --idle-s=5]`: SQLite rows read and written by
// the queue object per message, as Cloudflare's Free plan counts them against its daily 5 million
// rows read and 100,000 rows written (an index entry written is a row; setAlarm is one row).
//
// Method: the real Worker and object in local workerd (local/worker-runtime.ts), the object
// metered (bench/worker/metered-worker.ts, bench/lib/sql-meter.ts: workerd's own rowsRead and
// rowsWritten of every cursor, by invocation kind and statement). Mail goes in through the dev
// route into handleEmail(), as the local SMTP ingress hands it over (once per recipient); a
// scripted agent (bench/lib/wire-agent.ts) speaks the wire protocol: takes each message (its
// chunks on the socket, or its body over GET /agent/body/<id>), then answers as each case says.
// Messages go one at a time (a home relay's usual load), each case from an empty queue. Then
// a second runtime with short timers measures what the object does while idle with an agent
// online (the silence-check alarm every AGENT_SILENT_MS/2, default 45 s) and the end of a
// message's life that the alarm's housekeeping does (the dedupe row, a bounced row's retention).
// Prints the tables; writes bench/results/rows-<date>.json.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BODY_SESSION_HEADER, type HelloFrame, type RecipientResult } from '../protocol/wire.ts';
import { DEFAULT_INLINE_MAX_BYTES } from '../bridge-worker/config.ts';
import { cloudflareBlock } from '../local/email-routing.ts';
import { startWorkerRuntime, type WorkerRuntime } from '../local/worker-runtime.ts';
import { template, wholeMessage, SENDER, type Template } from './lib/messages.ts';
import { METERED_ENTRY, takeMeter } from './lib/metered.ts';
import { addReports, totals, type KindTally, type MeterReport, type Tally } from './lib/sql-meter.ts';
import { WireAgent } from './lib/wire-agent.ts';

const { values: args } = parseArgs({ options: {
  n: { type: 'string' }, 'deferred-n': { type: 'string' }, 'idle-s': { type: 'string' }, out: { type: 'string' },
} });
const N = Number(args.n ?? 200);
const DEFERRED_N = Number(args['deferred-n'] ?? Math.ceil(N / 2));
const IDLE_S = Number(args['idle-s'] ?? 5);
const KiB = 1024;
const MiB = 1024 * KiB;
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const AGENT_TOKEN = 'bench-agent-token-0123456789';
const DEV_TOKEN = 'bench-dev-token-0123456789ab';
const RCPTS = ['alice@example.test', 'bob@example.test', 'carol@example.test'];
/** The Free plan's daily allowances for SQLite-backed objects, and its DO requests. */
const FREE = { rowsRead: 5_000_000, rowsWritten: 100_000, requests: 100_000 };
/** Silence checks a day with an agent online (AGENT_SILENT_MS default 90 s: an alarm every 45 s). */
const SILENCE_ALARMS_A_DAY = 86_400 / 45;
const say = (s: string): void => { process.stdout.write(`${s}\n`); };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- a runtime, its meter, its agent --------------------------------------------------------

interface Bench { rt: WorkerRuntime; dir: string; logs: string[]; take(): Promise<MeterReport> }

async function start(vars: Record<string, string>): Promise<Bench> {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-rows-'));
  const logs: string[] = [];
  const rt = await startWorkerRuntime({
    entry: METERED_ENTRY, persistDir: join(dir, 'do'), agentTokens: [AGENT_TOKEN], devIngressToken: DEV_TOKEN,
    // The object answers ingest once stored: the verdict wait is memory and wall time, no rows.
    verdictWaitMs: 0, vars, onLog: (l) => logs.push(l),
  });
  // Twice, 200 ms apart: what an invocation still does after its answer went out (R2 deletes,
  // their DELETE) is its own.
  const take = async (): Promise<MeterReport> => {
    const a = await takeMeter(rt);
    await sleep(200);
    return addReports(a, await takeMeter(rt));
  };
  return { rt, dir, logs, take };
}

async function untilLog(b: Bench, from: number, event: string, id: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  const hit = (l: string): boolean => l.includes(`"event":"${event}"`) && l.includes(`"${id}"`);
  while (!b.logs.slice(from).some(hit)) {
    if (Date.now() > deadline) throw new Error(`no ${event} for ${id} within ${ms} ms; last lines:\n${b.logs.slice(-10).join('\n')}`);
    await sleep(2);
  }
}

/** A scripted agent as the real one is configured: window 1, 8 MiB of credit given back 1 MiB at a time, bounces, R2 fetches. */
class Agent {
  seen = 0;
  /** Chunk bytes read and given back as credit. */
  #givenBack = 0;
  readonly wire: WireAgent;
  readonly session: string;
  readonly b: Bench;

  private constructor(wire: WireAgent, session: string, b: Bench) {
    this.wire = wire;
    this.session = session;
    this.b = b;
  }

  static async connect(b: Bench, bounces: boolean): Promise<Agent> {
    const wire = await WireAgent.connect(new URL('/agent', b.rt.url).href.replace(/^http/, 'ws'), AGENT_TOKEN);
    const hello: HelloFrame = { type: 'hello', v: 2, agent: 'bench', window: 1, credit: 8 * MiB, bounces, fetch: true, fetchSession: true };
    wire.send(hello);
    await wire.until(0, (r) => r.some((x) => x.kind === 'frame' && x.frame.type === 'welcome'), 'welcome');
    const a = new Agent(wire, wire.last('welcome')?.session ?? '', b);
    a.seen = wire.received.length;
    return a;
  }

  /** The next frame of `type` (about `id`, if given) after what was already seen. */
  async next<T extends 'message' | 'bounce' | 'end'>(type: T, id?: string): Promise<Extract<WireAgent['received'][number], { kind: 'frame' }>['frame'] & { type: T }> {
    for (;;) {
      const i = this.wire.received.findIndex((x, j) => j >= this.seen && x.kind === 'frame' && x.frame.type === type && (id === undefined || ('id' in x.frame && x.frame.id === id)));
      if (i >= 0) {
        this.seen = i + 1;
        const x = this.wire.received[i];
        if (x?.kind !== 'frame') throw new Error('unreachable');
        return x.frame as never;
      }
      await this.wire.until(this.wire.received.length, (r) => r.length > 0, `a ${type} frame`, 30_000);
    }
  }

  /** Takes the next message leased to it: its body read to the end (R2 or chunks), as the agent would. */
  async take(): Promise<string> {
    const m = await this.next('message');
    if (m.fetch) {
      const res = await fetch(new URL(`/agent/body/${m.id}`, this.b.rt.url), { headers: { Authorization: `Bearer ${AGENT_TOKEN}`, [BODY_SESSION_HEADER]: this.session } });
      if (res.status !== 200) throw new Error(`GET /agent/body/${m.id}: ${res.status}`);
      await res.arrayBuffer();
    } else {
      await this.next('end', m.id);
      // The real agent gives credit back 1 MiB at a time, as it has read that much.
      while (this.wire.chunkBytes - this.#givenBack >= MiB) {
        this.wire.send({ type: 'credit', bytes: MiB });
        this.#givenBack += MiB;
      }
    }
    return m.id;
  }

  async ack(id: string, outcome: RecipientResult['outcome'], rcpt: string): Promise<void> {
    const from = this.b.logs.length;
    const r: RecipientResult = outcome === 'delivered' ? { recipient: rcpt, outcome, code: 250, enhanced: '2.0.0', text: 'Saved' }
      : outcome === 'tempfail' ? { recipient: rcpt, outcome, code: 451, enhanced: '4.3.0', text: 'Temporary failure' }
        : { recipient: rcpt, outcome, code: 550, enhanced: '5.1.1', text: 'No such user' };
    this.wire.send({ type: 'ack', id, results: [r] });
    await untilLog(this.b, from, outcome === 'delivered' ? 'message.acked' : outcome === 'tempfail' ? 'message.deferred' : 'message.failed', id);
  }
}

// ---- the cases ---------------------------------------------------------------------------------

type Script = 'delivered' | 'deferred' | 'bounced' | 'dead-letter';
interface Case { name: string; size: number; rcpts: number; script: Script; n: number }

let serial = 0;
async function post(b: Bench, t: Template, to: string): Promise<void> {
  const url = new URL('/dev/email', b.rt.url);
  url.searchParams.set('from', SENDER);
  url.searchParams.set('to', to);
  // Under a fresh Cloudflare block, as Email Routing hands each recipient's copy over.
  const raw = Buffer.concat([cloudflareBlock(SENDER, to), wholeMessage(t, `rows-${process.pid}-${++serial}`)]);
  const res = await fetch(url, { method: 'POST', body: raw, headers: { Authorization: `Bearer ${DEV_TOKEN}` } });
  const body = await res.text();
  if (res.status !== 200) throw new Error(`POST /dev/email: ${res.status} ${body}`);
}

/** One sender's message through its whole life: a copy per recipient, each taken and answered as the script says. */
async function life(b: Bench, agent: Agent, t: Template, c: Case): Promise<void> {
  const rcpts = RCPTS.slice(0, c.rcpts);
  for (const to of rcpts) await post(b, t, to);
  for (let k = 0; k < rcpts.length; k++) {
    const id = await agent.take();
    const rcpt = agent.wire.last('message', id)?.recipients[0] ?? '';
    switch (c.script) {
      case 'delivered':
        await agent.ack(id, 'delivered', rcpt);
        break;
      case 'deferred':
        await agent.ack(id, 'tempfail', rcpt);
        // The alarm wakes it (RETRY_FIRST_MS later) and leases it again.
        if (await agent.take() !== id) throw new Error('another message came before the deferred one');
        await agent.ack(id, 'delivered', rcpt);
        break;
      case 'bounced': {
        await agent.ack(id, 'permfail', rcpt);
        await agent.next('bounce', id);
        const from = b.logs.length;
        agent.wire.send({ type: 'bounced', id, status: 'sent', code: 250, text: '2.0.0 Ok: queued as BENCH' });
        await untilLog(b, from, 'bounce.sent', id);
        break;
      }
      case 'dead-letter':
        await agent.ack(id, 'permfail', rcpt);
        break;
    }
  }
}

interface CaseResult {
  name: string; size: number; rcpts: number; script: Script; senderMessages: number; queued: number; seconds: number;
  report: MeterReport;
}

async function runCase(b: Bench, agent: Agent, c: Case): Promise<CaseResult> {
  const t = template(c.size, `rows-${c.size}`);
  await b.take();  // what came before is not this case's
  const t0 = Date.now();
  for (let i = 0; i < c.n; i++) await life(b, agent, t, c);
  const seconds = (Date.now() - t0) / 1000;
  const report = await b.take();
  say(`  ${c.name}: ${c.n} × ${c.rcpts} in ${seconds.toFixed(1)} s; loadavg ${loadavg()[0]?.toFixed(2)}`);
  return { name: c.name, size: c.size, rcpts: c.rcpts, script: c.script, senderMessages: c.n, queued: c.n * c.rcpts, seconds, report };
}

// ---- report helpers ------------------------------------------------------------------------------

const per = (x: number, n: number): string => (x / n).toFixed(x / n >= 100 ? 0 : 1);
const kindsOf = (r: MeterReport): [string, KindTally][] => Object.entries(r.kinds).sort((a, b) => b[1].rowsWritten - a[1].rowsWritten);
/** DO requests the invocations make: an RPC call, alarm or WebSocket upgrade 1, an incoming WebSocket message 1/20. */
const requestsOf = (r: MeterReport): number => Object.entries(r.kinds).reduce((n, [k, t]) => n + t.invocations * (k.startsWith('ws:') ? 1 / 20 : 1), 0);
function topStatements(r: MeterReport, by: 'rowsWritten' | 'rowsRead', n: number): { sql: string; t: Tally; kinds: string }[] {
  return Object.entries(r.statements).map(([sql, m]) => {
    const t = Object.values(m).reduce((a, x) => ({ calls: a.calls + x.calls, rowsRead: a.rowsRead + x.rowsRead, rowsWritten: a.rowsWritten + x.rowsWritten }), { calls: 0, rowsRead: 0, rowsWritten: 0 });
    return { sql, t, kinds: Object.keys(m).join(', ') };
  }).filter((x) => x.t[by] > 0).sort((a, b) => b.t[by] - a.t[by]).slice(0, n);
}
const short = (sql: string, max = 110): string => (sql.length > max ? `${sql.slice(0, max - 1)}…` : sql);

// ---- main ----------------------------------------------------------------------------------------

const load0 = loadavg();
say(`bench:rows — n=${N} (deferred ${DEFERRED_N}); loadavg ${load0.map((x) => x.toFixed(2)).join(' ')}; ${new Date().toISOString()}`);
const SMALL = 10 * KiB;
const LARGE = 200 * KiB;
if (LARGE <= DEFAULT_INLINE_MAX_BYTES || SMALL > DEFAULT_INLINE_MAX_BYTES) throw new Error('the sizes no longer straddle INLINE_MAX_BYTES');
const cases: Case[] = [
  { name: 'inline 10 KiB, 1 rcpt, delivered', size: SMALL, rcpts: 1, script: 'delivered', n: N },
  { name: 'inline 10 KiB, 3 rcpts, delivered', size: SMALL, rcpts: 3, script: 'delivered', n: N },
  { name: 'R2 200 KiB, 1 rcpt, delivered', size: LARGE, rcpts: 1, script: 'delivered', n: N },
  { name: 'R2 200 KiB, 3 rcpts, delivered', size: LARGE, rcpts: 3, script: 'delivered', n: N },
  { name: 'inline 10 KiB, 451 then 250', size: SMALL, rcpts: 1, script: 'deferred', n: DEFERRED_N },
  { name: 'R2 200 KiB, 451 then 250', size: LARGE, rcpts: 1, script: 'deferred', n: DEFERRED_N },
  { name: 'inline 10 KiB, 550: bounce sent', size: SMALL, rcpts: 1, script: 'bounced', n: N },
  { name: 'inline 10 KiB, 550: dead-letter (no bounce relay)', size: SMALL, rcpts: 1, script: 'dead-letter', n: N },
];

const results: CaseResult[] = [];
// The message cases: silence checks off (no alarm but the message's own), a deferred message due 200 ms later.
const main = await start({ RETRY_FIRST_MS: '200', RETRY_MAX_MS: '400', AGENT_SILENT_MS: String(4 * 3_600_000) });
let setup: MeterReport;
try {
  let agent = await Agent.connect(main, true);
  setup = await main.take();
  for (const c of cases) {
    if (c.script === 'dead-letter') {
      await agent.wire.close();
      agent = await Agent.connect(main, false);
    }
    results.push(await runCase(main, agent, c));
  }
  await agent.wire.close();
} finally {
  await main.rt.dispose();
  await rm(main.dir, { recursive: true, force: true });
}

// Idle with an agent online, and the housekeeping that ends a life: silence checks every 500 ms
// (the default is every 45 s), the dedupe memory and a bounced row's retention 30 s (24 h and 5 days).
const HOUSEKEEPING_MS = 30_000;
const idle = await start({ AGENT_SILENT_MS: '1000', DEDUPE_WINDOW_MS: String(HOUSEKEEPING_MS), RETENTION_MS: String(HOUSEKEEPING_MS) });
const idleRuns: Record<string, MeterReport> = {};
const D = N;
const B = Math.ceil(N / 4);
try {
  const agent = await Agent.connect(idle, true);
  // Heartbeats, as the agent sends every 10 s: the runtime answers them; they keep the socket from being silent.
  const beat = setInterval(() => agent.wire.ping(), 200);
  try {
    await sleep(1500);
    idleRuns.first = await idle.take();  // start, hello, the first alarm (with the hourly storage check)
    await sleep(IDLE_S * 1000);
    idleRuns.empty = await idle.take();
    const t = template(SMALL, 'rows-idle');
    for (let i = 0; i < D; i++) await life(idle, agent, t, { name: '', size: SMALL, rcpts: 1, script: 'delivered', n: 1 });
    for (let i = 0; i < B; i++) await life(idle, agent, t, { name: '', size: SMALL, rcpts: 1, script: 'bounced', n: 1 });
    const lastAck = Date.now();
    idleRuns.filling = await idle.take();
    await sleep(IDLE_S * 1000);
    idleRuns.full = await idle.take();
    // Until every dedupe row and bounced row is past its time, and an alarm or two more.
    await sleep(Math.max(0, lastAck + HOUSEKEEPING_MS + 2000 - Date.now()));
    idleRuns.pruned = await idle.take();
  } finally {
    clearInterval(beat);
  }
  await agent.wire.close();
  // A wake-up: the object started again on its storage (as after an eviction between alarms):
  // what its constructor reads on a current schema with nothing to recover.
  await idle.rt.restart();
  idleRuns.wake = await takeMeter(idle.rt);
} finally {
  await idle.rt.dispose();
  await rm(idle.dir, { recursive: true, force: true });
}

// ---- report ----------------------------------------------------------------------------------------

/** The alarm's prune of the dedupe memory reads every row of it (no index on acked_at): a cost of the day, not of one life. */
const DEDUPE_SCAN = 'DELETE FROM delivered WHERE acked_at < ?';
const scanOf = (r: MeterReport): number => Object.values(r.statements[DEDUPE_SCAN] ?? {}).reduce((n, t) => n + t.rowsRead, 0);
say(`\nRows per queued message (one per recipient), whole life from email() to its last answer; mean over the case. W rows written, R rows read (SQL rows, index entries included, + 1 written per setAlarm); R′ without the alarm's scan of the dedupe rows kept by earlier cases (counted per day below). DO requests: RPC calls and alarms 1, incoming WebSocket messages 1/20.`);
say('| case | messages | W / msg | R / msg | R′ / msg | DO requests / msg | 100 k ÷ W | 5 M ÷ R′ | 100 k ÷ requests |');
say('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
const rowsOut = results.map((r) => {
  const tt = totals(r.report);
  const w = tt.rowsWritten / r.queued;
  const rAll = tt.rowsRead / r.queued;
  const rd = (tt.rowsRead - scanOf(r.report)) / r.queued;
  const rq = requestsOf(r.report) / r.queued;
  say(`| ${r.name} | ${r.queued} | ${w.toFixed(1)} | ${rAll.toFixed(1)} | ${rd.toFixed(1)} | ${rq.toFixed(2)} | ${Math.floor(FREE.rowsWritten / w).toLocaleString('en')} | ${Math.floor(FREE.rowsRead / rd).toLocaleString('en')} | ${Math.floor(FREE.requests / rq).toLocaleString('en')} |`);
  return { name: r.name, queued: r.queued, written: w, readAll: rAll, read: rd, requests: rq };
});

say('\nBy invocation kind, per queued message: W / R (invocations per message)');
for (const r of results) {
  say(`- ${r.name}: ${kindsOf(r.report).map(([k, t]) => `${k} ${per(t.rowsWritten, r.queued)} / ${per(t.rowsRead, r.queued)} (${(t.invocations / r.queued).toFixed(2)})`).join('; ')}`);
}

const all = results.reduce((a, r) => addReports(a, r.report), { kinds: {}, statements: {} } as MeterReport);
const queuedAll = results.reduce((n, r) => n + r.queued, 0);
say(`\nTop writers over every case (${queuedAll} queued messages): rows written per message, calls per message, the statement [kinds]`);
for (const s of topStatements(all, 'rowsWritten', 10)) say(`- ${per(s.t.rowsWritten, queuedAll)} W, ${per(s.t.calls, queuedAll)} calls: \`${short(s.sql)}\` [${s.kinds}]`);
say(`\nTop readers over every case: rows read per message`);
for (const s of topStatements(all, 'rowsRead', 8)) say(`- ${per(s.t.rowsRead, queuedAll)} R, ${per(s.t.calls, queuedAll)} calls: \`${short(s.sql)}\` [${s.kinds}]`);

const alarmOf = (r: MeterReport | undefined): KindTally | undefined => r?.kinds.alarm;
const perAlarm = (r: MeterReport | undefined): { n: number; w: number; r: number } => {
  const a = alarmOf(r);
  return a && a.invocations > 0 ? { n: a.invocations, w: a.rowsWritten / a.invocations, r: a.rowsRead / a.invocations } : { n: 0, w: Number.NaN, r: Number.NaN };
};
const empty = perAlarm(idleRuns.empty);
const full = perAlarm(idleRuns.full);
const first = perAlarm(idleRuns.first);
say(`\nIdle, an agent online: the silence-check alarm (every 45 s by default: ${SILENCE_ALARMS_A_DAY} a day), rows per alarm W / R`);
say(`- first alarm after start (hourly storage check with it): ${first.w.toFixed(1)} / ${first.r.toFixed(1)} [${first.n}]`);
say(`- empty queue, no dedupe rows: ${empty.w.toFixed(1)} / ${empty.r.toFixed(1)} [${empty.n}]`);
say(`- with ${D} dedupe rows (delivered in the window) and ${B} bounced rows kept: ${full.w.toFixed(1)} / ${full.r.toFixed(1)} [${full.n}]`);
const slope = (full.r - empty.r) / (D + B);
say(`  → rows read per alarm grow by ${slope.toFixed(2)} per row kept; statements read per alarm:`);
const fullAlarmStmts = topStatements({ kinds: {}, statements: Object.fromEntries(Object.entries(idleRuns.full?.statements ?? {}).filter(([, m]) => m.alarm).map(([s, m]) => [s, { alarm: m.alarm as Tally }])) }, 'rowsRead', 6);
for (const s of fullAlarmStmts) say(`    ${per(s.t.rowsRead, full.n)} R: \`${short(s.sql)}\``);
const prunedAlarms = alarmOf(idleRuns.pruned);
const baseW = empty.w * (prunedAlarms?.invocations ?? 0);
const tailW = ((prunedAlarms?.rowsWritten ?? 0) - baseW);
say(`- the housekeeping that ends lives (${D} dedupe rows and ${B} bounced rows dropped): ${prunedAlarms?.invocations ?? 0} alarms, ${prunedAlarms?.rowsWritten ?? 0} W (${tailW.toFixed(0)} beyond idle: ${(tailW / (D + B)).toFixed(2)} W per message) / ${prunedAlarms?.rowsRead ?? 0} R`);
for (const s of topStatements(idleRuns.pruned ?? { kinds: {}, statements: {} }, 'rowsWritten', 6)) say(`    ${s.t.rowsWritten} W, ${s.t.calls} calls: \`${short(s.sql)}\``);
const wake = idleRuns.wake?.kinds.start;
say(`- a wake-up (the object started again on current storage, as after an eviction between alarms): ${wake?.rowsWritten ?? 0} W / ${wake?.rowsRead ?? 0} R in ${wake?.calls ?? 0} statements`);

// A day on the Free plan, an agent online all day: silence alarms are fixed; each message adds
// its life, its share of housekeeping, and (rows read) one dedupe row every alarm reads for 24 h.
const inline = rowsOut[0];
const r2 = rowsOut[2];
const tailPerMsg = tailW / (D + B);
const idleW = SILENCE_ALARMS_A_DAY * empty.w;
const idleR = SILENCE_ALARMS_A_DAY * empty.r;
const day = (m: { written: number; read: number; requests: number } | undefined): { byW: number; byR: number; byReq: number } => {
  if (!m) return { byW: 0, byR: 0, byReq: 0 };
  const byW = Math.floor((FREE.rowsWritten - idleW) / (m.written + tailPerMsg));
  const byR = Math.floor((FREE.rowsRead - idleR) / (m.read + SILENCE_ALARMS_A_DAY * slope));
  const byReq = Math.floor((FREE.requests - SILENCE_ALARMS_A_DAY) / m.requests);
  return { byW, byR, byReq };
};
const dIn = day(inline);
const dR2 = day(r2);
say(`\nA Free-plan day with an agent online (${SILENCE_ALARMS_A_DAY} silence alarms: ${idleW.toFixed(0)} W, ${idleR.toFixed(0)} R; each message its life, ${tailPerMsg.toFixed(2)} W of housekeeping, and ${slope.toFixed(2)} R × ${SILENCE_ALARMS_A_DAY} alarms for its dedupe row's 24 h):`);
say(`- inline 10 KiB: ${dIn.byW.toLocaleString('en')} msg/day by rows written, ${dIn.byR.toLocaleString('en')} by rows read, ${dIn.byReq.toLocaleString('en')} by DO requests`);
say(`- R2 200 KiB:   ${dR2.byW.toLocaleString('en')} msg/day by rows written, ${dR2.byR.toLocaleString('en')} by rows read, ${dR2.byReq.toLocaleString('en')} by DO requests`);

const load1 = loadavg();
const date = new Date().toISOString();
const file = args.out ?? join(ROOT, 'bench', 'results', `rows-${date.slice(0, 16).replace(/[T:]/g, '-')}.json`);
await writeFile(file, `${JSON.stringify({
  date, loadavg: { start: load0, end: load1 }, n: N, deferredN: DEFERRED_N,
  method: 'metered RelayQueue (bench/worker/metered-worker.ts) in local workerd: SqlStorageCursor rowsRead/rowsWritten of every statement, setAlarm/deleteAlarm 1 row written, KV get/put/delete 1 row per key; mail through POST /dev/email (handleEmail), a scripted wire agent, one message at a time',
  perMessage: rowsOut, perDay: { inline: dIn, r2: dR2, idleW, idleR, tailPerMsg, readSlopePerKeptRow: slope },
  setup, cases: results, idle: idleRuns,
}, null, 1)}\n`);
say(`\nwrote ${file}; loadavg at the end ${load1.map((x) => x.toFixed(2)).join(' ')}`);
// A meter that counted nothing is a broken bench, not a free relay.
if (totals(all).rowsWritten === 0 || totals(all).rowsRead === 0) {
  say('FAILED: the meter counted no rows');
  process.exit(1);
}
