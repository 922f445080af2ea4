// `npm run bench` (quick, < 5 min on 2 cores) and `npm run bench:full` (issue 7's matrix).
//
// One run measures every path on this machine against one Dovecot (bench/lib/dovecot.ts):
// direct LMTP, the relay, a private Postfix relay and seed 002's HTTP-API design
// (bench/baselines/http-api, a baseline, not product code). Writes
// bench/results/<YYYY-MM-DD>.json (runs of the same day are appended) and prints a
// markdown report. See docs/performance.md for what each figure means.
//
// Flags: --full, --paths=direct-lmtp,relay,postfix,http-api, --no-profile, --no-backlog,
// --no-memory, --no-fidelity, --backlog=N, --out=<file>, --scale=<factor of messages per cell>,
// --verdict-wait=<ms>, --memory-size=<bytes>, --no-cells (skip the throughput/latency matrix), --credit=<bytes> and --window=<n> (agent),
// --no-home-core (skip the comparison with the home side on a core of its own), --warmup=<messages per path before the cells>,
// --agent-node-flags=<flag,flag> (Node/V8 flags added to the deployed agent's, to measure one),
// --agent-env=<K=V,K=V> (environment added to the agent's).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULTS } from '../edge-agent/agent-config.ts';
import { LmtpClient } from '../lmtp-proxy/client.ts';
import { startDovecot, type DovecotFixture } from './lib/dovecot.ts';
import { drive, type Outgoing, type Sent } from './lib/driver.ts';
import { ctimeGranularity, MaildirWatcher } from './lib/maildir-watch.ts';
import { eightBitMessage, pieces, SENDER, sentPart, template, wholeMessage, type Template } from './lib/messages.ts';
import {
  directPath, PATHS, startHttpApi, startPostfixPath, startRelay,
  type AgentOptions, type HttpApiPath, type PathName, type PathUnderTest, type RelayPath,
} from './lib/paths.ts';
import { freePort, postfixVersion } from './lib/postfix.ts';
import { profileIsolate } from './lib/workerd-inspect.ts';
import { findPid, machineBusy, pinTree, procStatus, resetPeak, rssSampler, treeCpu } from './lib/proc.ts';
import { analyzeProfile, type ProfileSummary } from './lib/profile.ts';
import {
  cellKey, markdown, sizeLabel,
  type BacklogResult, type CellResult, type FidelityResult, type HomeCoreResult, type MemoryResult, type PathInfo, type ResultsFile, type RunResult, type TargetResult,
} from './lib/report.ts';
import { summarize } from './lib/stats.ts';

const KiB = 1024;
const MiB = 1024 * 1024;
const USERS = ['alice', 'bob', 'carol', 'dave'];
const RECIPIENTS = USERS.map((u) => `${u}@example.test`);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Cell { size: number; concurrency: number; count: number }
interface Mode {
  name: 'quick' | 'full';
  cells: Cell[];
  warmup: number;
  backlog: number;
  memoryBytes: number;
  profileCount: number;
}

const QUICK: Mode = {
  name: 'quick',
  // Fewer messages and combinations: every path at 10 KiB c1/c8 (the targets' cells),
  // 10 KiB c32, 100 KiB c8 and 5 MiB c8.
  cells: [
    { size: 10 * KiB, concurrency: 1, count: 200 },
    { size: 10 * KiB, concurrency: 8, count: 400 },
    { size: 10 * KiB, concurrency: 32, count: 384 },
    { size: 100 * KiB, concurrency: 8, count: 160 },
    { size: 5 * MiB, concurrency: 8, count: 16 },
  ],
  warmup: 24,
  backlog: 1000,
  memoryBytes: 25 * MiB,
  profileCount: 300,
};

const FULL: Mode = {
  name: 'full',
  cells: [
    { size: 10 * KiB, concurrency: 1, count: 500 },
    { size: 10 * KiB, concurrency: 8, count: 2000 },
    { size: 10 * KiB, concurrency: 32, count: 2000 },
    { size: 100 * KiB, concurrency: 1, count: 300 },
    { size: 100 * KiB, concurrency: 8, count: 800 },
    { size: 100 * KiB, concurrency: 32, count: 800 },
    { size: 5 * MiB, concurrency: 1, count: 24 },
    { size: 5 * MiB, concurrency: 8, count: 64 },
    { size: 5 * MiB, concurrency: 32, count: 96 },
  ],
  warmup: 50,
  backlog: 10_000,
  memoryBytes: 25 * MiB,
  profileCount: 1000,
};

// ---- arguments ---------------------------------------------------------------------

const argv = process.argv.slice(2);
const flag = (name: string): boolean => argv.includes(`--${name}`);
const opt = (name: string): string | undefined => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const base: Mode = flag('full') ? FULL : QUICK;
// --scale=0.1: fewer messages per cell (a smoke test of the harness, not a measurement).
const scale = Number(opt('scale') ?? '1');
const scaled: Mode = scale === 1 ? base : {
  ...base, cells: base.cells.map((c) => ({ ...c, count: Math.max(c.concurrency, Math.round(c.count * scale)) })),
  backlog: Math.max(10, Math.round(base.backlog * scale)), profileCount: Math.max(20, Math.round(base.profileCount * scale)),
};
// --warmup=N: messages per path before the cells (default 24 quick, 50 full). V8 optimizes a
// function only after some thousands of calls, so an agent a few hundred messages old still runs
// its per-message code unoptimized: --warmup=4000 measures one that has been up a while.
const warmupOpt = opt('warmup');
const mode: Mode = warmupOpt === undefined ? scaled : { ...scaled, warmup: Number(warmupOpt) };
const selected = (opt('paths')?.split(',') ?? [...PATHS]).filter((p): p is PathName => (PATHS as readonly string[]).includes(p));
const backlogCount = Number(opt('backlog') ?? mode.backlog);
// --verdict-wait=0: the Worker's VERDICT_WAIT_MS (default: the Worker's own, 15 s), to see
// what holding the sender's SMTP transaction until the agent's ack costs.
const verdictWaitOpt = opt('verdict-wait');
const verdictWait = verdictWaitOpt === undefined ? undefined : Number(verdictWaitOpt);
// --credit=<bytes>: the agent's creditBytes (MAILBRIDGE_CREDIT_BYTES; default 8 MiB).
const creditOpt = opt('credit');
// --window=<n>: the agent's concurrency (MAILBRIDGE_CONCURRENCY; default DEFAULTS.concurrency).
const windowOpt = opt('window');
const agentWindow = windowOpt ? Number(windowOpt) : DEFAULTS.concurrency;
const agentCredit = creditOpt ? Number(creditOpt) : DEFAULTS.creditBytes;
const agentNodeFlags = opt('agent-node-flags')?.split(',').filter(Boolean) ?? [];
const agentEnv = Object.fromEntries((opt('agent-env')?.split(',').filter(Boolean) ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
// --memory-size=<bytes>: the size of the one-message memory test (default 25 MiB).
const memorySize = Number(opt('memory-size') ?? mode.memoryBytes);

const log = (msg: string): void => { process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`); };

// ---- helpers -----------------------------------------------------------------------

const ms = (x: number): number => Math.round(x * 1000) / 1000;

function git(): { head: string; dirtyFiles: number } {
  try {
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain'], { cwd: ROOT, encoding: 'utf8' }).split('\n').filter(Boolean).length;
    return { head, dirtyFiles: dirty };
  } catch {
    return { head: 'unknown', dirtyFiles: 0 };
  }
}

function dovecotVersion(): string {
  try {
    return execFileSync('dovecot', ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

/** Every tree this bench started (itself and its children, Postfix's daemonized master). */
function ourTrees(paths: PathUnderTest[]): Record<string, number[]> {
  const roots: Record<string, number[]> = { bench: [process.pid] };
  for (const p of paths) if (p.name === 'postfix') roots.postfix = p.procs().postfix ?? [];
  return roots;
}

let runSeq = 0;
const runTag = randomBytes(3).toString('hex');
function idFor(cell: string, i: number): string {
  return `${runTag}.${cell}.${i}`;
}

async function readFully(file: string): Promise<Buffer | null> {
  return readFile(file).catch(() => null);
}

// ---- one cell: N messages of one size at one concurrency through one path ------------

interface Ctx {
  dovecot: DovecotFixture;
  dovecotPid: number | null;
  watcher: MaildirWatcher;
  paths: PathUnderTest[];
  templates: Map<number, Template>;
}

function tmpl(ctx: Ctx, size: number): Template {
  let t = ctx.templates.get(size);
  if (!t) {
    t = template(size, sizeLabel(size).replace(' ', ''));
    ctx.templates.set(size, t);
  }
  return t;
}

// Other people run tests on this machine. Before a cell, wait (within a budget) for the
// CPU used outside this bench to drop below a third of a core; what remains is reported.
let quietBudgetMs = mode.name === 'full' ? 240_000 : 30_000;
async function quiet(ctx: Ctx): Promise<void> {
  const t0 = performance.now();
  while (quietBudgetMs > 0) {
    const all0 = treeCpu(ourTrees(ctx.paths));
    const busy0 = machineBusy();
    await new Promise((r) => setTimeout(r, 300));
    const all1 = treeCpu(ourTrees(ctx.paths));
    const ours = Object.keys(all1).reduce((a, k) => a + (all1[k] ?? 0) - (all0[k] ?? 0), 0);
    const bg = (machineBusy() - busy0 - ours) / 0.3;
    if (bg < 0.33) break;
    quietBudgetMs -= 300;
  }
  const waited = performance.now() - t0;
  if (waited > 1000) log(`waited ${(waited / 1000).toFixed(1)} s for other load to calm down (budget left ${(quietBudgetMs / 1000).toFixed(0)} s)`);
}

async function runCell(ctx: Ctx, path: PathUnderTest, cell: Cell, record = true): Promise<CellResult> {
  const t = tmpl(ctx, cell.size);
  const tag = `c${runSeq++}`;
  await ctx.watcher.clear();
  if (record) await quiet(ctx);
  const trees = { ...path.procs(), ...(ctx.dovecotPid ? { dovecot: [ctx.dovecotPid] } : {}) };
  const cpu0 = treeCpu(trees);
  const all0 = treeCpu(ourTrees(ctx.paths));
  const busy0 = machineBusy();
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  const sent = await drive({
    target: path.target, count: cell.count, concurrency: cell.concurrency, sender: SENDER,
    message: (i): Outgoing => {
      const id = idFor(tag, i);
      return { id, recipient: RECIPIENTS[i % RECIPIENTS.length] ?? 'alice@example.test', pieces: pieces(t, id), size: t.size };
    },
  });
  const accepted = sent.filter((s) => s.ok);
  const waitMs = 120_000 + cell.count * (cell.size / MiB) * 200;
  await ctx.watcher.waitFor(accepted.map((s) => s.id), waitMs);
  const tEnd = Math.max(t0, ...accepted.map((s) => ctx.watcher.get(s.id)?.t ?? 0));
  const self = process.cpuUsage(self0);
  const cpu1 = treeCpu(trees);
  const all1 = treeCpu(ourTrees(ctx.paths));
  const busy = machineBusy() - busy0;
  const delivered = accepted.filter((s) => ctx.watcher.get(s.id) !== undefined);
  const seconds = (tEnd - t0) / 1000;
  const n = delivered.length || 1;
  const lat = (f: (s: Sent, at: number) => number): number[] => delivered.map((s) => f(s, ctx.watcher.get(s.id)?.t ?? Number.NaN));
  const cpuMsPerMsg: Record<string, number> = {};
  for (const k of Object.keys(trees)) cpuMsPerMsg[k] = ms((((cpu1[k] ?? 0) - (cpu0[k] ?? 0)) * 1000) / n);
  cpuMsPerMsg['bench driver'] = ms((self.user + self.system) / 1000 / n);
  const ours = Object.keys(all1).reduce((a, k) => a + (all1[k] ?? 0) - (all0[k] ?? 0), 0);
  let byteExact: boolean | null = null;
  const first = delivered[0];
  const arrival = first ? ctx.watcher.get(first.id) : undefined;
  if (first && arrival) {
    const stored = await readFully(arrival.file);
    const part = stored ? sentPart(stored) : null;
    byteExact = part !== null && part.equals(wholeMessage(t, first.id));
  }
  const failures = [...new Set(sent.filter((s) => !s.ok).map((s) => s.reply))].slice(0, 3);
  const result: CellResult = {
    path: path.name, size: cell.size, concurrency: cell.concurrency, count: cell.count,
    accepted: accepted.length, delivered: delivered.length, failures,
    seconds: ms(seconds),
    msgsPerSec: ms(delivered.length / seconds),
    mibPerSec: ms((delivered.length * cell.size) / MiB / seconds),
    latencyMs: {
      dataEndToMaildir: summarize(lat((s, at) => at - s.tDot)),
      replyToMaildir: summarize(lat((s, at) => at - s.tReply)),
      dataEndToReply: summarize(delivered.map((s) => s.tReply - s.tDot)),
    },
    cpuMsPerMsg,
    backgroundCores: ms(Math.max(0, busy - ours) / seconds),
    detectionLagMs: summarize(ctx.watcher.lags),
    reconciled: delivered.filter((s) => ctx.watcher.get(s.id)?.reconciled).length,
    byteExact,
  };
  if (record) {
    const l = result.latencyMs.dataEndToMaildir;
    log(`${path.name.padEnd(11)} ${cellKey(cell).padEnd(12)} ${result.msgsPerSec.toFixed(1).padStart(7)} msg/s  p50 ${l.p50.toFixed(1)} ms  p99 ${l.p99.toFixed(1)} ms` +
      `${result.accepted < cell.count ? `  REFUSED ${cell.count - result.accepted}: ${failures.join(' | ')}` : ''}` +
      `${result.delivered < result.accepted ? `  MISSING ${result.accepted - result.delivered}` : ''}  bg ${result.backgroundCores.toFixed(2)} cores`);
  }
  return result;
}

// ---- backlog: N messages queued with no agent, then the agent started ----------------

async function postDirect(relay: RelayPath, body: Buffer, to: string): Promise<number> {
  const url = new URL('/dev/email', relay.workerUrl);
  url.searchParams.set('from', SENDER);
  url.searchParams.set('to', to);
  const res = await fetch(url, { method: 'POST', body, headers: { Authorization: `Bearer ${relay.devToken}` } });
  await res.arrayBuffer();
  return res.status;
}

async function runBacklog(ctx: Ctx, relay: RelayPath, count: number, live: CellResult | undefined, agent: AgentOptions = {}): Promise<BacklogResult> {
  const t = tmpl(ctx, 10 * KiB);
  await relay.stopAgent();
  await ctx.watcher.clear();
  // Ids new to this run: a message sent twice within DEDUPE_WINDOW_MS is dropped as a duplicate.
  const tag = `b${runSeq++}`;
  const ids = Array.from({ length: count }, (_, i) => idFor(tag, i));
  let next = 0;
  let refused = 0;
  const tp0 = performance.now();
  await Promise.all(Array.from({ length: 8 }, async () => {
    for (;;) {
      const i = next++;
      if (i >= count) return;
      const status = await postDirect(relay, wholeMessage(t, ids[i] ?? ''), RECIPIENTS[i % RECIPIENTS.length] ?? '');
      if (status !== 200) refused++;
    }
  }));
  const postSeconds = (performance.now() - tp0) / 1000;
  const before = await relay.summary();
  log(`backlog: ${count - refused} queued in ${postSeconds.toFixed(1)} s (${JSON.stringify(before)}); starting the agent`);
  const cpuRoots = { workerd: [relay.workerdPid() ?? -1], dovecot: [ctx.dovecotPid ?? -1] };
  const cpu0 = treeCpu(cpuRoots);
  const { spawnedAt, readyAt } = await relay.startAgent(agent);
  const agentPid = relay.agentPid();
  const missing = await ctx.watcher.waitFor(ids, 120_000 + count * 100);
  const agentCpu = agentPid ? treeCpu({ agent: [agentPid] }).agent ?? null : null;
  const cpu1 = treeCpu(cpuRoots);
  const times = ids.map((id) => ctx.watcher.get(id)?.t).filter((x): x is number => x !== undefined).sort((a, b) => a - b);
  const firstT = times[0] ?? Number.NaN;
  const lastT = times[times.length - 1] ?? Number.NaN;
  const delivered = times.length;
  // Let the last acks land before asking the queue what is left.
  await new Promise((r) => setTimeout(r, 500));
  const after = await relay.summary().catch(() => null);
  const secondsFromSpawn = (lastT - spawnedAt) / 1000;
  const secondsSteady = (lastT - firstT) / 1000;
  const r: BacklogResult = {
    count, postSeconds: ms(postSeconds), postRate: ms((count - refused) / postSeconds),
    queuedBeforeAgent: before.queued ?? 0,
    agentSpawnToSessionMs: ms(readyAt - spawnedAt),
    delivered,
    secondsFromSpawn: ms(secondsFromSpawn), secondsSteady: ms(secondsSteady),
    rateFromSpawn: ms(delivered / secondsFromSpawn), rateSteady: ms((delivered - 1) / secondsSteady),
    liveRate: live ? live.msgsPerSec : null,
    liveCell: live ? cellKey(live) : 'n/a',
    // The agent process was started for the drain: all its CPU is the drain's (plus start-up).
    agentCpuMsPerMsg: agentCpu !== null ? ms((agentCpu * 1000) / (delivered || 1)) : null,
    workerdCpuMsPerMsg: ms((((cpu1.workerd ?? 0) - (cpu0.workerd ?? 0)) * 1000) / (delivered || 1)),
    dovecotCpuMsPerMsg: ctx.dovecotPid ? ms((((cpu1.dovecot ?? 0) - (cpu0.dovecot ?? 0)) * 1000) / (delivered || 1)) : null,
    rateByDecile: Array.from({ length: 10 }, (_, k) => {
      const a = times[Math.floor((k * times.length) / 10)];
      const b = times[Math.floor(((k + 1) * times.length) / 10) - 1];
      const n = Math.floor(((k + 1) * times.length) / 10) - Math.floor((k * times.length) / 10);
      return a !== undefined && b !== undefined && b > a ? ms((n - 1) / ((b - a) / 1000)) : Number.NaN;
    }),
    leftInQueue: after,
  };
  log(`backlog: ${delivered}/${count} drained, ${r.rateFromSpawn.toFixed(1)} msg/s from spawn, ${r.rateSteady.toFixed(1)} steady${missing.length ? `, ${missing.length} MISSING` : ''}`);
  return r;
}

// ---- the home side on a core of its own ----------------------------------------------
// On one 2-core box the Cloudflare stand-ins (ingress, workerd) compete with Dovecot and the
// agent for the same cores, which never happens in production. Here CPU 1 plays the Dell
// (Dovecot, the agent) and CPU 0 everything that runs elsewhere in production (the sender,
// Email Routing's stand-in, the Worker and Durable Object, today's EC2 Postfix). Measured:
// direct LMTP into the Dell from CPU 0 (its physical limit), the relay live (bounded by the
// stand-ins on CPU 0), and the relay draining a backlog (the object only serves stored
// messages; the Dell's core does the rest): how fast the home side absorbs mail.

const HOME_CPU = '1';
const ELSEWHERE_CPU = '0';

async function runHomeCore(ctx: Ctx, relay: RelayPath, count: number): Promise<HomeCoreResult> {
  const direct = ctx.paths.find((p) => p.name === 'direct-lmtp') ?? directPath(ctx.dovecot.lmtpPort);
  const cell: Cell = { size: 10 * KiB, concurrency: 8, count };
  // The bench process alone, not its tree: Dovecot and the relay are its children.
  const pinSelf = (cpus: string): number[] => pinTree(process.pid, cpus, false);
  const unpin = (): void => {
    pinSelf('0-1');
    for (const root of [ctx.dovecotPid, relay.edgePid, relay.agentPid()]) if (root) pinTree(root, '0-1');
  };
  try {
    pinSelf(ELSEWHERE_CPU);
    pinTree(relay.edgePid, ELSEWHERE_CPU);
    if (ctx.dovecotPid) pinTree(ctx.dovecotPid, HOME_CPU);
    await relay.stopAgent();
    await relay.startAgent({ cpus: HOME_CPU });
    const allowed = (pid: number | null): string => (pid ? /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '?' : '-');
    log(`home core: CPUs allowed — bench ${allowed(process.pid)}, ingress ${allowed(relay.edgePid)}, workerd ${allowed(relay.workerdPid())}, dovecot ${allowed(ctx.dovecotPid)}, agent ${allowed(relay.agentPid())}`);
    const directCell = await runCell(ctx, direct, cell);
    // The same with the sender on the home core too: what any LMTP client next to Dovecot costs.
    pinSelf(HOME_CPU);
    const directLocal = await runCell(ctx, direct, cell);
    pinSelf(ELSEWHERE_CPU);
    const relayCell = await runCell(ctx, relay, cell);
    const drain = await runBacklog(ctx, relay, count, relayCell, { cpus: HOME_CPU });
    const ratio = drain.rateFromSpawn / directCell.msgsPerSec;
    log(`home core: direct ${directCell.msgsPerSec.toFixed(1)} msg/s, relay live ${relayCell.msgsPerSec.toFixed(1)}, drain ${drain.rateFromSpawn.toFixed(1)} (${ratio.toFixed(2)}× direct)`);
    return { homeCpu: HOME_CPU, elsewhereCpu: ELSEWHERE_CPU, direct: directCell, directLocal, relayLive: relayCell, drain, drainVsDirect: ms(ratio) };
  } finally {
    unpin();
    await relay.stopAgent();
    await relay.startAgent();
  }
}

// ---- one big message: time and peak memory -------------------------------------------

async function runMemory(ctx: Ctx, path: PathUnderTest, size: number, variant: { name: string; agent: AgentOptions; parallel?: number } | null = null): Promise<MemoryResult> {
  const t = tmpl(ctx, size);
  await ctx.watcher.clear();
  const peaks: MemoryResult['peaks'] = {};
  const single: Record<string, number> = {};
  const sampled: Record<string, number> = {};
  let note = '';
  if (path.name === 'relay') {
    const relay = path as RelayPath;
    // A fresh agent process: its VmHWM then covers start-up and this one message only.
    await relay.stopAgent();
    await relay.startAgent(variant?.agent ?? {});
    const a = relay.agentPid();
    const w = relay.workerdPid();
    if (a) { single.agent = a; sampled.agent = a; }
    if (w) { single.workerd = w; sampled.workerd = w; }
    sampled['ingress node + workerd (PSS)'] = relay.edgePid;
    note = 'agent: fresh process; workerd: VmHWM reset before the message (Worker + Durable Object share this workerd)';
  } else if (path.name === 'http-api') {
    const h = path as HttpApiPath;
    single.api = h.apiPid;
    sampled.api = h.apiPid;
    const w = h.workerdPid();
    if (w) { single.workerd = w; sampled.workerd = w; }
    sampled['ingress node + workerd (PSS)'] = h.edgePid;
    note = 'VmHWM reset before the message';
  } else if (path.name === 'postfix') {
    sampled['postfix (all processes)'] = path.procs().postfix?.[0] ?? -1;
    note = 'summed PSS of all Postfix processes, sampled every 20 ms';
  } else {
    note = 'the bench process itself is the client';
  }
  await new Promise((r) => setTimeout(r, 300));
  const idle: Record<string, number | null> = {};
  let resetOk = true;
  for (const [k, pid] of Object.entries(single)) {
    idle[k] = procStatus(pid)?.rss ?? null;
    if (!(path.name === 'relay' && k === 'agent')) resetOk = resetPeak(pid) && resetOk;
  }
  if (!resetOk) note += ' (could not reset VmHWM: the figure includes earlier peaks)';
  const sampler = rssSampler(sampled, 20);
  // A fresh id each time: the relay would rightly drop a second identical copy as a duplicate.
  // `parallel` messages sent at once (the agent's window and credit bound what is in flight).
  const n = variant?.parallel ?? 1;
  const tag = `mem${runSeq++}`;
  const sent = await drive({
    target: path.target, count: n, concurrency: n, sender: SENDER,
    message: (i): Outgoing => ({ id: idFor(tag, i), recipient: RECIPIENTS[i % RECIPIENTS.length] ?? 'alice@example.test', pieces: pieces(t, idFor(tag, i)), size }),
  });
  const s = sent[0];
  const ok = sent.filter((x) => x.ok).map((x) => x.id);
  if (ok.length > 0) await ctx.watcher.waitFor(ok, 120_000 * n);
  await new Promise((r) => setTimeout(r, 200));
  const maxima = sampler.stop();
  for (const k of new Set([...Object.keys(single), ...Object.keys(sampled)])) {
    const pid = single[k];
    peaks[k] = {
      idleBytes: idle[k] ?? null,
      hwmBytes: pid ? (procStatus(pid)?.hwm ?? null) : null,
      sampledMaxBytes: maxima[k] ?? null,
    };
  }
  const at = s ? ctx.watcher.get(s.id) : undefined;
  if (variant && path.name === 'relay') {
    // Back to the agent as every other measurement runs it.
    await (path as RelayPath).stopAgent();
    await (path as RelayPath).startAgent();
  }
  const r: MemoryResult = {
    path: path.name, variant: variant?.name ?? null, size, delivered: at !== undefined && ok.length === n && ok.every((id) => ctx.watcher.get(id) !== undefined),
    dataEndToMaildirMs: at && s ? ms(at.t - s.tDot) : null,
    dataEndToReplyMs: s ? ms(s.tReply - s.tDot) : null,
    peaks, note: s?.ok ? note : `${note}; refused: ${s?.reply ?? 'no reply'}`,
  };
  log(`memory ${path.name}${variant ? ` (${variant.name})` : ''}: ${at ? `${r.dataEndToMaildirMs} ms` : 'NOT DELIVERED'}; ${Object.entries(peaks).map(([k, v]) => `${k} ${(((v.hwmBytes ?? v.sampledMaxBytes) ?? 0) / 1e6).toFixed(1)} MB`).join(', ')}`);
  return r;
}

// ---- fidelity: an 8-bit message ------------------------------------------------------

async function runFidelity(ctx: Ctx, path: PathUnderTest): Promise<FidelityResult> {
  await ctx.watcher.clear();
  const id = idFor(`8bit${runSeq++}`, PATHS.indexOf(path.name));
  const raw = eightBitMessage(id);
  const sent = await drive({
    target: path.target, count: 1, concurrency: 1, sender: SENDER,
    message: (): Outgoing => ({ id, recipient: 'alice@example.test', pieces: [raw], size: raw.byteLength }),
  });
  const s = sent[0];
  if (!s?.ok) return { path: path.name, stored: false, exact: false, replacementChars: 0, note: `refused: ${s?.reply ?? ''}` };
  await ctx.watcher.waitFor([id], 30_000);
  const at = ctx.watcher.get(id);
  const stored = at ? await readFully(at.file) : null;
  const part = stored ? sentPart(stored) : null;
  if (!part) return { path: path.name, stored: false, exact: false, replacementChars: 0, note: 'not found in the Maildir' };
  let fffd = 0;
  for (let i = part.indexOf('\xef\xbf\xbd', 0, 'latin1'); i >= 0; i = part.indexOf('\xef\xbf\xbd', i + 3, 'latin1')) fffd++;
  const exact = part.equals(raw);
  return {
    path: path.name, stored: true, exact, replacementChars: fffd,
    note: exact ? 'identical after the headers the path adds' : `stored ${part.byteLength} bytes for ${raw.byteLength} sent`,
  };
}

// ---- profiles: the relay's three processes during 10 KiB c8 ----------------------------

// A relay of its own, so that the profilers do not touch the measured one: the agent and the
// ingress process under --cpu-prof (written when they exit), the Worker + Durable Object
// isolate in workerd through its V8 inspector. Samples from start-up and warm-up are left out.
async function runProfiles(ctx: Ctx, count: number, outDir: string): Promise<ProfileSummary[]> {
  await mkdir(outDir, { recursive: true });
  const before = new Set(await readdir(outDir));
  const inspectPort = await freePort();
  const t0 = performance.now();
  const relay = await startRelay(ctx.dovecot.lmtpPort, { edgeProfDir: outDir, inspectPort, agent: { cpuProfDir: outDir } });
  const agentPid = relay.agentPid();
  const edgePid = relay.edgePid;
  const agentStart = performance.now();  // close enough: the agent was spawned just before its session came up
  let cellStart = 0;
  let workerdFile: string | null = null;
  try {
    await runCell(ctx, relay, { size: 10 * KiB, concurrency: 4, count: mode.warmup }, false);
    const isolate = await profileIsolate(inspectPort);
    cellStart = performance.now();
    const r = await runCell(ctx, relay, { size: 10 * KiB, concurrency: 8, count }, false);
    const profile = await isolate.stop();
    workerdFile = join(outDir, `workerd-isolate.${process.pid}.cpuprofile`);
    await writeFile(workerdFile, JSON.stringify(profile));
    log(`profile run: ${r.msgsPerSec.toFixed(1)} msg/s with the profilers on (agent ${r.cpuMsPerMsg.agent} ms CPU/msg)`);
  } finally {
    await relay.stopAgent();
    await relay.edgeStop();
    await relay.stop();
  }
  const out: ProfileSummary[] = [];
  for (const f of (await readdir(outDir)).filter((x) => x.endsWith('.cpuprofile') && !before.has(x))) {
    const pid = Number(/\.(\d+)\.\d+\.\d+\.cpuprofile$/.exec(f)?.[1] ?? -1);
    const file = join(outDir, f);
    const s = file === workerdFile ? await analyzeProfile(file, 'workerd isolate (Worker + Durable Object)')
      : pid === agentPid ? await analyzeProfile(file, 'edge-agent', cellStart - agentStart)
      : pid === edgePid ? await analyzeProfile(file, 'ingress process (smtp-server, handoff, Miniflare)', cellStart - t0)
      : null;
    if (!s) continue;
    s.file = file.slice(ROOT.length);
    out.push(s);
  }
  return out;
}

// ---- targets -------------------------------------------------------------------------

function targets(run: RunResult): TargetResult[] {
  const cell = (p: PathName, size: number, c: number): CellResult | undefined => run.cells.find((x) => x.path === p && x.size === size && x.concurrency === c);
  const out: TargetResult[] = [];
  // Issue #24's targets; `got` null: the step did not run (a path missing, a --no-* flag).
  const check = (id: string, target: string, got: { value: string; met: boolean; basis: string } | null, why = 'not measured'): void => {
    out.push(got ? { id, target, ...got } : { id, target, value: '–', met: null, basis: why });
  };
  const x = (a: number, b: number): string => `${(a / b).toFixed(2)}× (${a.toFixed(1)} vs ${b.toFixed(1)} msg/s)`;
  const r8 = cell('relay', 10 * KiB, 8);
  const d8 = cell('direct-lmtp', 10 * KiB, 8);
  const p8 = cell('postfix', 10 * KiB, 8);
  const h = run.homeCore;
  check('home-core-vs-direct', 'home core drain ≥ 0.9× direct LMTP on the same core (10 KiB)', h ? {
    value: `${h.drainVsDirect.toFixed(2)}× (relay drain ${h.drain.rateFromSpawn.toFixed(1)} vs direct c8 ${h.direct.msgsPerSec.toFixed(1)} msg/s)`,
    met: h.drain.delivered === h.drain.count && h.drainVsDirect >= 0.9,
    basis: `Dovecot + agent on CPU ${h.homeCpu}, sender and Cloudflare stand-ins on CPU ${h.elsewhereCpu}; relay drains ${h.drain.count} queued messages (agent window ${agentWindow}) vs direct LMTP c8`,
  } : null);
  const b = run.backlog;
  check('backlog-vs-direct', 'backlog drain ≥ 0.8× direct LMTP c8 (10 KiB)', b && d8 ? {
    value: x(b.rateFromSpawn, d8.msgsPerSec), met: b.delivered === b.count && b.rateFromSpawn >= 0.8 * d8.msgsPerSec,
    basis: `${b.count} × 10 KiB queued, timed from spawning the agent to the last file (steady rate ${b.rateSteady.toFixed(1)} msg/s; live relay c8 ${b.liveRate?.toFixed(1) ?? '–'})`,
  } : null);
  check('live-vs-postfix', 'live 10 KiB c8 ≥ 1.0× the Postfix relay', r8 && p8 ? {
    value: x(r8.msgsPerSec, p8.msgsPerSec), met: r8.msgsPerSec >= p8.msgsPerSec,
    basis: 'messages/s until the last file is in the Maildir; the relay includes the local stand-ins for Cloudflare on the same two cores',
  } : null, run.paths.find((p) => p.name === 'postfix')?.reason ?? 'not measured');
  const r1 = cell('relay', 10 * KiB, 1);
  const d1 = cell('direct-lmtp', 10 * KiB, 1);
  for (const [q, limit] of [['p50', 5], ['p99', 20]] as const) {
    const added = r1 && d1 ? r1.latencyMs.dataEndToMaildir[q] - d1.latencyMs.dataEndToMaildir[q] : null;
    check(`latency-${q}`, `added latency 10 KiB c1, ${q} < ${limit} ms`, r1 && d1 && added !== null ? {
      value: `+${added.toFixed(1)} ms (${r1.latencyMs.dataEndToMaildir[q].toFixed(1)} vs ${d1.latencyMs.dataEndToMaildir[q].toFixed(1)} ms)`,
      met: added < limit, basis: `end of DATA → file in Maildir, ${r1.delivered} messages one at a time, relay vs direct LMTP`,
    } : null);
  }
  // The agent's own CPU: per 10 KiB message at c8, and per MiB from the 5 MiB cell.
  const a8 = r8?.cpuMsPerMsg.agent;
  check('agent-cpu-small', 'agent CPU ≤ 0.5 ms per 10 KiB message', r8 && a8 !== undefined ? {
    value: `${a8.toFixed(2)} ms`, met: a8 <= 0.5,
    basis: `relay 10 KiB c8, /proc utime+stime of the agent over the cell; direct LMTP's sender (the bench driver) ${d8?.cpuMsPerMsg['bench driver']?.toFixed(2) ?? '–'} ms; background load ${r8.backgroundCores.toFixed(2)} cores`,
  } : null);
  const big = run.cells.find((c) => c.path === 'relay' && c.size >= MiB && c.concurrency === 8);
  const perMiB = big?.cpuMsPerMsg.agent === undefined ? undefined : big.cpuMsPerMsg.agent / (big.size / MiB);
  check('agent-cpu-mib', 'agent CPU ≤ 2 ms per MiB', big && perMiB !== undefined ? {
    value: `${perMiB.toFixed(2)} ms`, met: perMiB <= 2, basis: `relay ${sizeLabel(big.size)} c8, agent CPU per message ÷ MiB; background load ${big.backgroundCores.toFixed(2)} cores`,
  } : null);
  for (const [id, variant, what] of [['agent-rss', null, 'one 25 MiB message'], ['agent-rss-in-flight', '4 messages at once', 'four 25 MiB messages in flight']] as const) {
    const m = run.memory.find((r) => r.path === 'relay' && r.variant === variant);
    const peak = m?.peaks.agent?.hwmBytes ?? null;
    check(id, `agent peak RSS < 80 MB, ${what}`, m && peak !== null ? {
      value: `${(peak / 1e6).toFixed(1)} MB (VmHWM)`, met: m.delivered && peak < 80e6,
      basis: `fresh agent process, ${variant ? `4 × ${sizeLabel(m.size)} sent at once` : `one ${sizeLabel(m.size)} message`}${m.delivered ? '' : ' (NOT delivered)'}; MB = 10^6 bytes`,
    } : null);
  }
  return out;
}

// ---- main ----------------------------------------------------------------------------

/**
 * A step after the matrix: one that fails (e.g. a mailbox reset) is logged and named in the
 * results' notes, and the run still writes what it measured (issue #24: a failed cleanup at the
 * end of a run lost all of it).
 */
async function optional<T>(what: string, notes: string[], fallback: T, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    log(`${what} FAILED: ${why}`);
    notes.push(`${what}: not measured, the step failed: ${why}`);
    return fallback;
  }
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const tStart = performance.now();
  log(`${mode.name} mode; paths: ${selected.join(', ')}`);
  const notes: string[] = [];
  const timing = { ctimeGranularityMs: 0 };
  const dovecot = await startDovecot({ users: USERS });
  const dovecotPid = findPid(join(dirname(dovecot.logPath), 'dovecot.conf'), 'dovecot');
  const paths: PathUnderTest[] = [];
  const info: PathInfo[] = [];
  cleanup = async () => {
    for (const p of paths.splice(0)) await p.stop().catch((err: unknown) => log(`stopping ${p.name}: ${String(err)}`));
    await dovecot.stop();
  };
  const profileDir = join(ROOT, 'bench', 'results', 'profiles', `${startedAt.toISOString().slice(0, 19).replace(/[:T]/g, '-')}`);
  try {
    // One delivery per user makes Dovecot create the Maildirs the watcher needs.
    const c = new LmtpClient({ protocol: 'lmtp', host: '127.0.0.1', port: dovecot.lmtpPort });
    for (const r of RECIPIENTS) await c.deliver({ sender: SENDER, recipients: [r] }, (async function* () { yield Buffer.from('Subject: init\r\n\r\ninit\r\n'); })());
    await c.close();
    const tickMs = await ctimeGranularity(dirname(dirname(dovecot.logPath)));
    log(`ctime granularity on the Maildirs' filesystem: ${tickMs.toFixed(2)} ms`);
    const watcher = new MaildirWatcher(RECIPIENTS.map((r) => dovecot.maildirOf(r)), tickMs);
    timing.ctimeGranularityMs = ms(tickMs);
    watcher.start();
    const ctx: Ctx = { dovecot, dovecotPid, watcher, paths, templates: new Map() };

    for (const name of selected) {
      try {
        const p = name === 'direct-lmtp' ? directPath(dovecot.lmtpPort)
          : name === 'relay' ? await startRelay(dovecot.lmtpPort, {
            ...(verdictWait === undefined ? {} : { verdictWaitMs: verdictWait }),
            agent: { creditBytes: agentCredit, concurrency: agentWindow, nodeFlags: agentNodeFlags, env: agentEnv },
          })
          : name === 'postfix' ? await startPostfixPath(dovecot.lmtpPort)
          : await startHttpApi(dovecot.lmtpPort);
        paths.push(p);
        const detail = name === 'relay' ? `ingress + workerd (Worker, Durable Object) in one process tree, edge-agent as deployed (dist/edge-agent.mjs, --expose-gc; window ${agentWindow}, ${agentCredit / MiB} MiB credit) as its own process, LMTP over TCP`
          : name === 'postfix' ? `Postfix ${(p as Awaited<ReturnType<typeof startPostfixPath>>).instance.version}, private instance, default concurrency settings, lmtp:inet to Dovecot`
          : name === 'http-api' ? 'BASELINE: seed 002 (bench/baselines/http-api): ingress + Worker (TextDecoder, JSON) in workerd, Node HTTP API, one LMTP connection per message, one delivery at a time'
          : 'LmtpClient, one connection per concurrent sender, kept (no RSET between clean transactions), LMTP over TCP';
        info.push({ name, available: true, reason: null, detail });
        log(`${name} up`);
      } catch (err) {
        const reason = err instanceof Error ? err.message.split('\n').slice(0, 3).join(' ') : String(err);
        info.push({ name, available: false, reason, detail: '' });
        log(`${name} NOT AVAILABLE: ${reason}`);
      }
    }

    // Warm-up (JIT, Dovecot's lmtp processes, connection pools); not recorded.
    for (const p of paths) await runCell(ctx, p, { size: 10 * KiB, concurrency: 4, count: mode.warmup }, false);
    log('warm-up done');

    // The big message first, while every process is as fresh as after start-up and warm-up.
    const memory: MemoryResult[] = [];
    if (!flag('no-memory')) {
      for (const p of paths) memory.push(await runMemory(ctx, p, memorySize));
      const relayPath = paths.find((p) => p.name === 'relay');
      if (relayPath) {
        // The same agent code run from its TypeScript source, as the tests run it: Node's type
        // stripping loads a WebAssembly TypeScript parser, and there is no --expose-gc.
        memory.push(await runMemory(ctx, relayPath, memorySize, { name: 'agent run from TypeScript source, without --expose-gc', agent: { source: true } }));
        // Several large messages in flight at once (issue #24): each body is fetched at most
        // FETCH_AHEAD_BYTES ahead of its LMTP client, so the peak should barely grow.
        memory.push(await runMemory(ctx, relayPath, memorySize, { name: '4 messages at once', agent: {}, parallel: 4 }));
      }
    }

    const cells: CellResult[] = [];
    // Paths interleaved per cell, in a rotating order, so that load from outside the
    // bench (other people's tests) does not land on one path only.
    for (const [k, cell] of (flag('no-cells') ? [] : mode.cells).entries()) {
      const order = paths.map((_, i) => paths[(i + k) % paths.length]).filter((p): p is PathUnderTest => p !== undefined);
      for (const p of order) cells.push(await runCell(ctx, p, cell));
    }

    const relay = paths.find((p): p is RelayPath => p.name === 'relay');
    let backlog: BacklogResult | null = null;
    if (relay && !flag('no-backlog')) {
      backlog = await optional('backlog', notes, null, () => runBacklog(ctx, relay, backlogCount, cells.find((c) => c.path === 'relay' && c.size === 10 * KiB && c.concurrency === 8)));
    }
    let homeCore: HomeCoreResult | null = null;
    const relayForHome = paths.find((p) => p.name === 'relay') as RelayPath | undefined;
    if (relayForHome && !flag('no-home-core')) {
      try {
        homeCore = await runHomeCore(ctx, relayForHome, mode.name === 'full' ? 2000 : 1000);
      } catch (err) {
        log(`home-core comparison skipped: ${String(err)}`);
      }
    }
    const fidelity: FidelityResult[] = [];
    if (!flag('no-fidelity')) for (const p of paths) fidelity.push(...await optional(`fidelity of ${p.name}`, notes, [], async () => [await runFidelity(ctx, p)]));
    let profiles: ProfileSummary[] = [];
    if (selected.includes('relay') && !flag('no-profile')) profiles = await optional('profiles', notes, [], () => runProfiles(ctx, mode.profileCount, profileDir));
    watcher.close();

    const lags = cells.map((c) => c.detectionLagMs.p99).filter(Number.isFinite);
    notes.push(`Maildir timing: a file's arrival is min(fs.watch callback on new/, its ctime + one tick). ctime (set by Dovecot's rename into new/) comes from the kernel's coarse clock, ${timing.ctimeGranularityMs} ms per tick on this filesystem; the callback is late by the bench process's event-loop delay. Callback minus ctime per cell: p50 ${Math.min(...cells.map((c) => c.detectionLagMs.p50)).toFixed(2)}–${Math.max(...cells.map((c) => c.detectionLagMs.p50)).toFixed(2)} ms, worst p99 ${Math.max(...lags).toFixed(2)} ms; so each arrival is late by at most min(that, ${timing.ctimeGranularityMs} ms). Files found by a directory scan instead of the watcher: ${cells.reduce((a, c) => a + c.reconciled, 0)}.`);
    notes.push('Latency "end of DATA" is when the sending client handed over the last body byte; its final dot / BDAT LAST goes out in the same tick. The sender\'s 250 comes after delivery on the relay (email() waits up to VERDICT_WAIT_MS for the agent\'s ack) and on the HTTP API (the Worker waits for the API, which waits for LMTP), before delivery on Postfix (queued).');
    notes.push(`CPU per message: utime+stime(+cutime+cstime) of each process tree from /proc/<pid>/stat (10 ms ticks) over the cell, divided by delivered messages; "bench driver" is the load generator (this process). "Background load" is the machine's busy time minus every process of this bench: other people's work on the same 2 cores during the cell.`);

    const finishedAt = new Date();
    const run: RunResult = {
      startedAt: startedAt.toISOString(), finishedAt: finishedAt.toISOString(),
      durationSeconds: Math.round((performance.now() - tStart) / 1000),
      mode: mode.name, git: git(),
      machine: {
        cores: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', memGiB: Math.round(totalmem() / 2 ** 30),
        kernel: release(), node: process.versions.node, dovecot: dovecotVersion(), postfix: await postfixVersion(),
        loadavgAtStart: '',
      },
      config: { timing, verdictWaitMs: verdictWait ?? 'worker default', agentCreditBytes: agentCredit, agentWindow, cells: mode.cells, warmup: mode.warmup, backlog: backlogCount, memoryBytes: memorySize, recipients: RECIPIENTS, profileCount: mode.profileCount },
      paths: info, cells, backlog, homeCore, memory, fidelity, profiles, targets: [], notes,
    };
    run.machine.loadavgAtStart = loadAtStart;
    run.targets = targets(run);

    const date = startedAt.toISOString().slice(0, 10);
    const file = opt('out') ?? join(ROOT, 'bench', 'results', `${date}.json`);
    await mkdir(dirname(file), { recursive: true });
    let results: ResultsFile = { date, runs: [] };
    try {
      results = JSON.parse(await readFile(file, 'utf8')) as ResultsFile;
    } catch {
      // a new day
    }
    results.runs.push(run);
    await writeFile(file, JSON.stringify(results, null, 1) + '\n');
    process.stdout.write(markdown(run, results.runs));
    log(`results: ${file.slice(ROOT.length)} (run ${results.runs.length} of the day); ${run.durationSeconds} s`);
  } finally {
    await cleanup();
  }
}

let cleanup = async (): Promise<void> => {};
let cleaning: Promise<void> | null = null;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping every process this bench started`);
    void (cleaning ??= cleanup()).finally(() => process.exit(130));
  });
}

const loadAtStart = loadavg().map((x) => x.toFixed(2)).join(' ');

main().then(() => process.exit(0), (err: unknown) => {
  log(`FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
});
