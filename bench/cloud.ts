// `npm run bench:cloud [-- --runs=<n> --sizes=10240,1048576 --no-profile --chunks | --inline]`: CPU time of each
// Worker and Durable Object invocation, one at a time, on an otherwise idle local workerd
// (issue #15 item 1). Cloudflare's Free plan allows 10 ms of CPU per invocation, Durable
// Objects included (each RPC call, incoming WebSocket message and alarm is one).
//
// Method: the real Worker + object in workerd (local/worker-runtime.ts), a scripted agent
// (bench/lib/wire-agent.ts) that sends one frame at a time. Around each invocation the bench
// reads the CPU time of workerd's main thread, which runs the isolate (JS, and the native calls
// it makes: SQLite, digests, ws.send) and workerd's own I/O loop, from the scheduler's exact
// account (/proc/<pid>/task/<tid>/schedstat, bench/lib/thread-cpu.ts): before, then after the
// object's answer has arrived and the thread has slept for 25 ms. perf samples the thread for
// the share inside the CPU-limit scope (bench/lib/cpu-scope.ts; its own cost per sample taken
// off), and uprobes on workerd's IoContext split that share into the Worker's invocation and
// the object's, which the edge limits separately (bench/lib/invocation-owner.ts). Then (unless
// --no-profile) the V8 inspector profiles ingest and the chunk pump per size.
// Prints a table per kind and size, writes bench/results/cloud-<date>.json; the last line
// names the largest CPU time of any single invocation.
import { createHash } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DatabaseSync } from 'node:sqlite';
import { MAX_CHUNK_BYTES, type HelloFrame, type RecipientResult } from '../protocol/wire.ts';
import { MAX_INLINE_MAX_BYTES } from '../bridge-worker/config.ts';
import { startWorkerRuntime, type WorkerRuntime } from '../local/worker-runtime.ts';
import { startR2Host, type R2Host } from '../local/r2-remote.ts';
import { template, wholeMessage, SENDER, type Template } from './lib/messages.ts';
import { childrenNamed, procStatus, resetPeak } from './lib/proc.ts';
import { freePort } from './lib/postfix.ts';
import { analyzeProfile, type ProfileSummary } from './lib/profile.ts';
import { summarize } from './lib/stats.ts';
import { perfCostPerSample, perfUnavailable, shareIn, startScopeSampler, type ScopeSampler } from './lib/cpu-scope.ts';
import { installProbes, shareByOwner, startOwnerTracer, type Owner, type OwnerTracer } from './lib/invocation-owner.ts';
import { processCpuNs, threadCpuNs, threadsOf, untilQuiet, untilRan } from './lib/thread-cpu.ts';
import { WireAgent } from './lib/wire-agent.ts';
import { heapUsage, inspectIsolate, inspectorWrapper, profileIsolate } from './lib/workerd-inspect.ts';

const { values: args } = parseArgs({ options: {
  runs: { type: 'string' }, sizes: { type: 'string' }, 'no-profile': { type: 'boolean', default: false },
  'no-scope': { type: 'boolean', default: false }, hz: { type: 'string' },
  chunks: { type: 'boolean', default: false }, inline: { type: 'boolean', default: false }, 'no-memory': { type: 'boolean', default: false }, 'no-cold': { type: 'boolean', default: false },
} });
const KiB = 1024;
const MiB = 1024 * KiB;
/** Runs per size: enough for a median and a maximum; fewer for the big ones (each run stores two messages). */
/**
 * --inline: the bucket bound as deployed, every size at most INLINE_MAX_BYTES's ceiling, so each
 * message takes the path small mail takes by default: kept in the object, sent on the WebSocket.
 * Its invocations are the chunk path's (the flows below), plus the bucket's alarms.
 */
const INLINE = args.inline === true;
const INLINE_SIZES = [10 * KiB, 64 * KiB, 128 * KiB - 2 * KiB, 256 * KiB - 2 * KiB];
const SIZES = (args.sizes?.split(',').map(Number) ?? (INLINE ? INLINE_SIZES : [10 * KiB, MiB, 5 * MiB, 25 * MiB]))
  .map((bytes) => ({ bytes, runs: Number(args.runs ?? 0) || (bytes >= 25 * MiB ? 5 : bytes >= 5 * MiB ? 7 : 9) }));
const AGENT_TOKEN = 'bench-agent-token-0123456789';
const DEV_TOKEN = 'bench-dev-token-0123456789ab';
const ADMIN_TOKEN = 'bench-admin-token-0123456789';
const RCPT = 'alice@example.test';
/** The real agent's credit: 8 MiB at hello, given back in 1 MiB grants as it reads (edge-agent/session/session.ts). */
const AGENT_CREDIT = 8 * MiB;
/** bridge-worker/pump.ts PUMP_BUDGET_BYTES (4 MiB) in 1 MiB chunks: what one invocation sends. */
const PUMP_BUDGET_CHUNKS = 4;
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const say = (s: string): void => { process.stdout.write(`${s}\n`); };
/** perf's sampling rate: 250 µs between samples; perf's own cost adds about 15 % to the thread's time. */
const HZ = Number(args.hz ?? 0) || 4000;
/** Full runs before measuring: V8 has compiled and tiered up what every kind runs. */
const WARM_RUNS = 3;
/** Fresh workerd processes, each measured on its first invocations (a cold isolate and object). */
const COLD_RUNS = 3;
/** workerd evicts a Durable Object after 10 s without a request (Miniflare's docs): a margin on top. */
const EVICTED_AFTER_MS = 15_000;
const scopeWhyNot: string | null = args['no-scope'] ? '--no-scope' : perfUnavailable();
/** --chunks: no BODIES binding, bodies in the object's SQLite chunks (the path before R2, and a deployment without the bucket). */
const R2 = args.chunks !== true && !INLINE;
/** The BODIES bucket is bound: the R2 path, or --inline (small bodies kept in the object all the same). */
const BOUND = R2 || INLINE;
/** The scripted agent's hello: with R2 it fetches bodies (as the real agent says). */
const hello: HelloFrame = { type: 'hello', v: 2, agent: 'bench', window: 1, credit: 0, bounces: true, ...(R2 ? { fetch: true } : {}) };
const sizeLabel = (n: number): string => (n >= MiB ? `${n / MiB} MiB` : `${n / KiB} KiB`);

interface Sample {
  kind: string; size: number; run: number; threadMs: number; processMs: number;
  /** The invocation's window, CLOCK_MONOTONIC ns, for the perf samples in it. */
  t0: number; t1: number;
  /** threadMs × the share of perf's samples in the window that were inside the CPU-limit scope. */
  scopeMs?: number; perfSamples?: number;
  /** scopeMs split by whose invocation ran: the Worker's, the object's, Miniflare's (local only); `start`: of the object's, its start by workerd. */
  ownerMs?: Record<Owner | 'start', number>;
}

// ---- the runtime --------------------------------------------------------------------------

const dir = await mkdtemp(join(tmpdir(), 'mailbridge-cloud-'));
const inspectPort = await freePort();
// R2 runs in a workerd of its own, as on the edge: the simulator's work is not the Worker's.
// Started first, with the plain workerd: the inspector wrapper is for the Worker's alone.
const r2host: R2Host | null = BOUND ? await startR2Host(join(dir, 'r2')) : null;
const r2pids = new Set(childrenNamed(process.pid, 'workerd'));
// Before the inspector wrapper is set: the calibration's workerd is a plain one.
/** What perf's sampling costs the sampled thread, per sample (taken off each window). */
const perfCost = scopeWhyNot === null ? await perfCostPerSample(HZ, dir) : null;
if (perfCost) say(`perf at ${HZ} Hz costs the sampled thread ${(perfCost.ms * 1000).toFixed(0)} µs a sample (a JS loop: ${perfCost.bare.toFixed(2)} ms bare, ${perfCost.sampled.toFixed(2)} ms sampled, ${perfCost.samples} samples)`);
process.env.MINIFLARE_WORKERD_PATH = await inspectorWrapper(dir, inspectPort);
const logs: string[] = [];
const rt: WorkerRuntime = await startWorkerRuntime({
  ...(r2host ? { bodiesRemote: r2host.address } : { bodies: false }),
  persistDir: join(dir, 'do'), agentTokens: [AGENT_TOKEN], devIngressToken: DEV_TOKEN,
  // The object answers ingest once stored: the verdict wait is wall time, not CPU, and would
  // make the POST wait for the scripted agent's ack.
  verdictWaitMs: 0,
  vars: {
    ADMIN_TOKEN,
    // The R2 path measures every size in R2; --inline keeps every size in the object.
    INLINE_MAX_BYTES: INLINE ? String(MAX_INLINE_MAX_BYTES) : '0',
    // A deferred message comes due 1.5 s later: the alarm measured is that wake-up.
    RETRY_FIRST_MS: '1500', RETRY_MAX_MS: '3000',
    // The silence-check alarm (every AGENT_SILENT_MS/2 with an agent online) must not fire mid-run.
    AGENT_SILENT_MS: String(2 * 3_600_000),
  },
  onLog: (l) => logs.push(l),
});
// `let`: the cold runs restart workerd (a new process, a new thread).
let workerd: number = childrenNamed(process.pid, 'workerd').find((p) => !r2pids.has(p)) ?? -1;
if (workerd < 0) throw new Error('no workerd child process found');
const isolate = threadsOf(workerd).find((t) => t.tid === workerd);
if (!isolate) throw new Error('workerd has no main thread?');
let tid = isolate.tid;
// Which invocation each sample belongs to: the Worker's or the object's, each with its own limit.
const ownersWhyNot: string | null = scopeWhyNot ?? installProbes(readlinkSync(`/proc/${workerd}/exe`));
/** From the runtime's start: a context made before a window must still be known in it. */
let tracer: OwnerTracer | null = await startTracer(join(dir, 'owners.data'));
const base = rt.url;
const agentUrl = new URL('/agent', base).href.replace(/^http/, 'ws');

async function untilLog(from: number, event: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!logs.slice(from).some((l) => l.includes(`"event":"${event}"`))) {
    if (Date.now() > deadline) throw new Error(`no ${event} log line within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const samples: Sample[] = [];
const failures: { size: number; run: number; kind: string; error: string }[] = [];
let runNo = 0;

/** One invocation: CPU of the isolate's thread (and of all of workerd) from before `act` until quiet after it. */
async function measure(kind: string, size: number, act: (cpu0: number) => Promise<void>): Promise<void> {
  await untilQuiet(workerd, tid);
  const w0 = Number(process.hrtime.bigint());
  const t0 = threadCpuNs(workerd, tid);
  const p0 = processCpuNs(workerd);
  await act(t0);
  await untilQuiet(workerd, tid);
  const t1 = threadCpuNs(workerd, tid);
  const p1 = processCpuNs(workerd);
  const w1 = Number(process.hrtime.bigint());
  samples.push({ kind, size, run: runNo, threadMs: (t1 - t0) / 1e6, processMs: (p1 - p0) / 1e6, t0: w0, t1: w1 });
}

/**
 * Stops `sampler` and gives each of `xs` its time in the CPU-limit scope: its thread time ×
 * the share of perf's samples in its window that were in the scope. BENCH_KEEP_PERF=<file>
 * keeps perf's data (with the stacks) as <file><suffix>, for a closer look.
 */
async function applyScope(sampler: ScopeSampler, data: string, suffix: string, xs: Sample[], tracer: OwnerTracer | null): Promise<void> {
  const perf = await sampler.stop();
  const owners = await tracer?.stop();
  if (process.env.BENCH_KEEP_PERF) await copyFile(data, `${process.env.BENCH_KEEP_PERF}${suffix}`);
  if (process.env.BENCH_KEEP_PERF && tracer) await copyFile(tracer.file, `${process.env.BENCH_KEEP_PERF}${suffix}.owners`);
  if (owners && owners.unknown > 0) say(`  (${owners.unknown} runImpl entries on a context the probes did not see made: counted as the Worker's)`);
  for (const x of xs) {
    const { samples: n, inScope } = shareIn(perf, x.t0, x.t1);
    x.perfSamples = n;
    // The thread's time less perf's own (perfCost: its least per sample), then by share.
    const ms = Math.max(0, x.threadMs - n * (perfCost?.ms ?? 0));
    // No sample in the window (a very short invocation): all of the thread's time counts.
    x.scopeMs = n === 0 ? ms : ms * (inScope / n);
    if (!owners) continue;
    const o = shareByOwner(perf, owners, x.t0, x.t1);
    // No sample at all: the whole thread time, to each side (harsh: it cannot be split).
    x.ownerMs = n === 0
      ? { worker: ms, object: ms, local: 0, start: 0 }
      : { worker: ms * (o.worker / n), object: ms * (o.object / n), local: ms * (o.local / n), start: ms * (o.start / n) };
  }
}

/** Probes on the workerd that runs the Worker: the owner of each sample (bench/lib/invocation-owner.ts). */
async function startTracer(file: string): Promise<OwnerTracer | null> {
  return ownersWhyNot === null ? startOwnerTracer(workerd, file) : null;
}

/** A frame that gets no answer: wait until the thread ran, then for quiet. */
const ran = (cpu0: number): Promise<void> => untilRan(workerd, tid, cpu0);

/** Posts one message to the dev route; returns the queue's id for it. */
async function post(t: Template, id: string): Promise<string> {
  const url = new URL('/dev/email', base);
  url.searchParams.set('from', SENDER);
  url.searchParams.set('to', RCPT);
  const send = (): Promise<Response> => fetch(url, { method: 'POST', body: wholeMessage(t, id), headers: { Authorization: `Bearer ${DEV_TOKEN}` } });
  let res: Response;
  try {
    res = await send();
  } catch (err) {
    // A kept-alive connection the server closed as the request went out (EPIPE, ECONNRESET
    // before any answer): nothing was stored, and a sender tries again. Said, so it is seen.
    const code = err instanceof Error && err.cause instanceof Error && 'code' in err.cause ? String(err.cause.code) : '';
    if (code !== 'EPIPE' && code !== 'ECONNRESET') throw err;
    say(`  (POST /dev/email: ${code} before an answer; sent again)`);
    res = await send();
  }
  const body = await res.text();
  if (res.status !== 200) throw new Error(`POST /dev/email: ${res.status} ${body}`);
  return String((JSON.parse(body) as { id?: unknown }).id ?? '');
}

async function admin(path: string, method = 'GET'): Promise<Buffer> {
  const res = await fetch(new URL(path, base), { method, headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`${method} ${path}: ${res.status} ${body.toString().slice(0, 200)}`);
  return body;
}

const result = (outcome: RecipientResult['outcome']): RecipientResult[] => [{
  recipient: RCPT, outcome,
  ...(outcome === 'delivered' ? { code: 250, enhanced: '2.0.0', text: 'Saved' }
    : outcome === 'tempfail' ? { code: 451, enhanced: '4.3.0', text: 'Temporary failure' }
      : { code: 550, enhanced: '5.1.1', text: 'No such user' }),
}];

const chunksIn = (r: WireAgent['received']): number => r.filter((x) => x.kind === 'chunk').length;
const hasFrame = (type: string, id?: string) => (r: WireAgent['received']): boolean =>
  r.some((x) => x.kind === 'frame' && x.frame.type === type && (id === undefined || ('id' in x.frame && x.frame.id === id)));

/**
 * Gives back `held` chunks one 1 MiB credit frame at a time, as the real agent does, each
 * measured alone, until the message's end frame has come. Returns when it has.
 */
async function pumpToEnd(agent: WireAgent, size: number, id: string, from: number): Promise<void> {
  if (R2) return fetchBody(agent, size, id);
  let at = from;
  while (!hasFrame('end', id)(agent.received.slice(from))) {
    const before = agent.received.length;
    await measure('credit → next chunk sent', size, async () => {
      agent.send({ type: 'credit', bytes: MAX_CHUNK_BYTES });
      at = await agent.until(before, (r) => chunksIn(r) > 0 || hasFrame('end', id)(r), 'chunk after credit');
    });
  }
  void at;
}

/** With R2: the agent's GET /agent/body/<id>, read to its end and checked, as one invocation. */
async function fetchBody(agent: WireAgent, size: number, id: string, kind = 'agent GET /agent/body/<id> (R2 object streamed back)'): Promise<void> {
  const m = agent.last('message', id);
  if (!m?.fetch) throw new Error(`message ${id} has no fetch in its frame`);
  const md5 = m.fetch.md5;
  const want = size - (m.prefix ?? 0);
  await measure(kind, size, async () => {
    const res = await fetch(new URL(`/agent/body/${id}`, base), { headers: { Authorization: `Bearer ${AGENT_TOKEN}` } });
    const body = Buffer.from(await res.arrayBuffer());
    if (res.status !== 200 || body.byteLength !== want) throw new Error(`body fetch: HTTP ${res.status}, ${body.byteLength} bytes, wanted ${want}`);
    if (createHash('md5').update(body).digest('hex') !== md5) throw new Error('body fetch: MD5 differs from the message frame\'s');
  });
}

/**
 * The credit the real agent would hold out once a message is read (its 1 MiB grants after the
 * last chunk send nothing): brings it back to 8 MiB in one frame.
 */
async function topUp(agent: WireAgent, size: number): Promise<void> {
  const missing = AGENT_CREDIT - (agent.granted - agent.chunkBytes);
  if (missing <= 0) return;
  await measure('credit, nothing to send (tops up to 8 MiB)', size, async (cpu0) => {
    agent.send({ type: 'credit', bytes: missing });
    await ran(cpu0);
  });
}

// ---- storage per message: the object's SQLite file, read beside workerd ------------------

interface Stored { pages: number; chunkBytes: number; messageRowBytes: number; deliveredRowBytes: number; messages: number; delivered: number }

async function storage(): Promise<Stored | null> {
  const files: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name));  // (R2's own storage is another process's, under dir/r2)
      else if (e.name.endsWith('.sqlite')) files.push(join(d, e.name));
    }
  };
  await walk(join(dir, 'do')).catch(() => undefined);
  const file = files[0];
  if (!file) return null;
  const db = new DatabaseSync(file, { readOnly: true });
  try {
    const one = (sql: string): Record<string, number | null> => db.prepare(sql).get() as Record<string, number | null>;
    const rowBytes = (table: string): string => {
      const cols = (db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => `COALESCE(length(${c.name}), 0)`);
      return `SELECT COUNT(*) AS n, COALESCE(SUM(${cols.join(' + ')}), 0) AS bytes FROM ${table}`;
    };
    const pages = one('PRAGMA page_count').page_count ?? 0;
    const pageSize = one('PRAGMA page_size').page_size ?? 4096;
    const msgs = one(rowBytes('messages'));
    const del = one(rowBytes('delivered'));
    return {
      pages: pages * pageSize, chunkBytes: one('SELECT COALESCE(SUM(length(data)), 0) AS b FROM chunks').b ?? 0,
      messageRowBytes: msgs.bytes ?? 0, messages: msgs.n ?? 0, deliveredRowBytes: del.bytes ?? 0, delivered: del.n ?? 0,
    };
  } finally {
    db.close();
  }
}

// ---- one run: every kind of invocation once, around two messages of one size ---------------

async function oneRun(t: Template, size: number, run: number, storageLog: Record<string, unknown>[] | null): Promise<void> {
  runNo = run;
  await measure('Worker fetch that does nothing (GET /healthz): the local floor', size, async () => {
    const r = await fetch(new URL('/healthz', base));
    await r.arrayBuffer();
  });
  let agent: WireAgent | undefined;
  await measure('connect (Worker fetch + object fetch: WebSocket accepted)', size, async () => {
    agent = await WireAgent.connect(agentUrl, AGENT_TOKEN);
  });
  if (!agent) throw new Error('unreachable');
  const a = agent;
  let from = a.received.length;
  await measure('hello (credit 0)', size, async () => {
    a.send(hello);
    await a.until(from, hasFrame('welcome'), 'welcome');
  });
  for (let i = 0; i < 3; i++) {
    from = a.received.length;
    await measure('heartbeat (ping, auto-response pong)', size, async () => {
      a.ping();
      await a.until(from, (r) => r.some((x) => x.kind === 'pong'), 'pong');
    });
  }
  const entries = [RCPT, '@example.test'];
  let logFrom = logs.length;
  await measure('recipients (one part, 2 entries)', size, async () => {
    a.send({ type: 'recipients', digest: createHash('sha256').update(entries.join('\n')).digest('hex'), part: 0, parts: 1, delimiter: '+', entries });
    await untilLog(logFrom, 'recipients.published');
  });

  // Message 1: stored with no credit outstanding (ingest = store only), then pumped 1 MiB per credit.
  const before = storageLog ? await storage() : null;
  from = a.received.length;
  await measure('email() + ingest, no credit (store only)', size, async () => {
    await post(t, `cloud-${size}-${run}-a`);
    await a.until(from, hasFrame('message'), 'message frame');
  });
  const id1 = a.last('message')?.id ?? '';
  const stored = storageLog ? await storage() : null;
  await measure('admin GET /admin/queue', size, async () => { await admin('/admin/queue'); });
  await measure('admin GET /admin/messages (list)', size, async () => { await admin('/admin/messages?limit=100'); });
  await measure('admin GET /admin/messages/<id> (show)', size, async () => { await admin(`/admin/messages/${id1}`); });
  await measure(R2 ? 'admin GET …/raw (export: the block, then the R2 object)' : 'admin GET …/raw (export; 1 RPC per chunk)', size, async () => {
    const raw = await admin(`/admin/messages/${id1}/raw`);
    if (raw.byteLength !== size) throw new Error(`raw export gave ${raw.byteLength} bytes, wanted ${size}`);
  });
  await pumpToEnd(a, size, id1, from);
  logFrom = logs.length;
  await measure(R2 ? 'ack delivered (row removed, R2 object deleted)' : 'ack delivered (message and its chunks deleted)', size, async () => {
    a.send({ type: 'ack', id: id1, results: result('delivered') });
    await untilLog(logFrom, 'message.acked');
  });
  if (storageLog) storageLog.push({ size, before, stored, delivered: await storage() });

  // Message 2: the agent holds its 8 MiB of credit, as the real one does: ingest stores and sends.
  await topUp(a, size);
  from = a.received.length;
  // With R2 no chunk follows the message frame: the agent fetches the body.
  // (--chunks: one invocation sends at most PUMP_BUDGET_BYTES, 4 MiB, of chunks; an alarm the rest.)
  const first = R2 ? 0 : Math.min(Math.ceil(size / MAX_CHUNK_BYTES), PUMP_BUDGET_CHUNKS);
  try {
    await measure(R2 ? 'email() + ingest, agent online (store + message frame)' : 'email() + ingest, agent holds 8 MiB credit (store + send)', size, async () => {
      await post(t, `cloud-${size}-${run}-b`);
      await a.until(from, (r) => hasFrame('message')(r) && chunksIn(r) >= first, 'message frame and its first chunks');
    });
  } catch (err) {
    // Seen at 25 MiB: workerd drops the POST's connection (EPIPE). Recorded, and the run ends here.
    const why = err instanceof Error ? `${err.message}${err.cause ? ` (${String(err.cause)})` : ''}` : String(err);
    failures.push({ size, run, kind: 'email() + ingest with an agent online', error: why });
    say(`  ${sizeLabel(size)} run ${run}: ingest with credit failed: ${why}`);
    await a.close().catch(() => undefined);
    return;
  }
  const id2 = a.last('message')?.id ?? '';
  await pumpToEnd(a, size, id2, from);
  logFrom = logs.length;
  await measure('ack tempfail (message deferred)', size, async () => {
    a.send({ type: 'ack', id: id2, results: result('tempfail') });
    await untilLog(logFrom, 'message.deferred');
  });
  await topUp(a, size);
  from = a.received.length;
  await measure(R2 ? 'alarm (deferred message due: leased, frame sent)' : 'alarm (deferred message due: leased, sent within 8 MiB credit)', size, async () => {
    await a.until(from, (r) => hasFrame('message', id2)(r) && chunksIn(r) >= first, 'message frame from the alarm', 30_000);
  });
  await pumpToEnd(a, size, id2, from);
  from = a.received.length;
  await measure('ack permfail (bounce task sent)', size, async () => {
    a.send({ type: 'ack', id: id2, results: result('permfail') });
    await a.until(from, hasFrame('bounce', id2), 'bounce frame');
  });
  logFrom = logs.length;
  await measure('bounced (sent)', size, async () => {
    a.send({ type: 'bounced', id: id2, status: 'sent', code: 250, text: 'ok' });
    await untilLog(logFrom, 'bounce.sent');
  });
  await measure('retry (nothing deferred)', size, async (cpu0) => {
    a.send({ type: 'retry' });
    await ran(cpu0);
  });
  await measure('admin DELETE /admin/messages/<id> (purge)', size, async () => { await admin(`/admin/messages/${id2}`, 'DELETE'); });
  logFrom = logs.length;
  await measure('close (webSocketClose)', size, async () => {
    await a.close();
    await untilLog(logFrom, 'agent.disconnected');
  });
}

// ---- profiles: where ingest's and the pump's time goes ------------------------------------

interface CpuProfile { nodes: { id: number; callFrame: { functionName: string }; children?: number[] }[]; samples: number[]; timeDeltas: number[] }

const OBJECT_FNS = new Set(['ingest', 'storeChunks', 'flush', 'dedupeKey', 'appendChunk', 'begin', 'commit', 'findDuplicate', '#scheduleAlarm', '#pumpAll', '#pump',
  'ingestStored', 'bodyOf', '#deleteBodies']);
const WORKER_FNS = new Set(['fetch', 'devEmail', 'handleEmail', 'hasToken', 'cloudflareVerdicts', 'readConfig', 'putBody', 'readHead', 'agentBody']);

/** ms of sampled time whose stack holds `ingest` (the object) or the Worker's email path, and the rest. */
function split(p: CpuProfile): Record<string, number> {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const out: Record<string, number> = { 'object: ingest or pump': 0, 'Worker: fetch/devEmail/handleEmail': 0, 'GC': 0, 'no JS on the stack (program)': 0, other: 0 };
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    const leaf = byId.get(p.samples[i] ?? -1)?.callFrame.functionName ?? '';
    if (leaf === '(idle)') continue;
    if (leaf === '(garbage collector)') { out.GC = (out.GC ?? 0) + dt; continue; }
    if (leaf === '(program)') { out['no JS on the stack (program)'] = (out['no JS on the stack (program)'] ?? 0) + dt; continue; }
    let group = 'other';
    for (let cur: number | undefined = p.samples[i]; cur !== undefined; cur = parent.get(cur)) {
      const fn = byId.get(cur)?.callFrame.functionName ?? '';
      // Async functions resume with only themselves on the stack: name the ones each side runs.
      if (OBJECT_FNS.has(fn)) { group = 'object: ingest or pump'; break; }
      if (WORKER_FNS.has(fn)) group = 'Worker: fetch/devEmail/handleEmail';
    }
    out[group] = (out[group] ?? 0) + dt;
  }
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Math.round(v * 10) / 10]));
}

interface ProfileResult { phase: string; size: number; threadMs: number; split: Record<string, number>; summary: ProfileSummary }

async function profiled(outDir: string, phase: string, size: number, act: () => Promise<void>): Promise<ProfileResult> {
  await untilQuiet(workerd, tid);
  // The sampler wakes the isolate's thread every 100 µs: the thread is never quiet while it
  // runs, so this thread time includes the profiler's own cost, and the tail is a fixed wait.
  const prof = await profileIsolate(inspectPort, 100);
  const t0 = threadCpuNs(workerd, tid);
  await act();
  await new Promise((r) => setTimeout(r, 150));
  const threadMs = (threadCpuNs(workerd, tid) - t0) / 1e6;
  const profile = (await prof.stop()) as CpuProfile;
  const file = join(outDir, `${phase.replace(/\W+/g, '-')}-${size}.cpuprofile`);
  await writeFile(file, JSON.stringify(profile));
  return { phase, size, threadMs, split: split(profile), summary: await analyzeProfile(file, `${phase} ${sizeLabel(size)}`, 0, 12) };
}

async function profileRuns(outDir: string): Promise<ProfileResult[]> {
  const out: ProfileResult[] = [];
  for (const { bytes } of SIZES.filter((s) => s.bytes >= MiB)) {
    const t = template(bytes, `cloud-prof-${bytes}`);
    const a = await WireAgent.connect(agentUrl, AGENT_TOKEN);
    a.send(hello);
    await a.until(0, hasFrame('welcome'), 'welcome');
    const from = a.received.length;
    out.push(await profiled(outDir, 'email()+ingest (store only)', bytes, async () => {
      await post(t, `cloud-prof-${bytes}`);
      await a.until(from, hasFrame('message'), 'message frame');
    }));
    const id = a.last('message')?.id ?? '';
    const n = Math.ceil(bytes / MAX_CHUNK_BYTES);
    out.push(await profiled(outDir, R2 ? 'body fetch (GET /agent/body/<id>)' : 'pump (credit frames, all chunks)', bytes, async () => {
      if (R2) {
        await (await fetch(new URL(`/agent/body/${id}`, base), { headers: { Authorization: `Bearer ${AGENT_TOKEN}` } })).arrayBuffer();
        return;
      }
      a.send({ type: 'credit', bytes: n * MAX_CHUNK_BYTES });
      await a.until(from, hasFrame('end', id), 'end frame');
    }));
    const logFrom = logs.length;
    a.send({ type: 'ack', id, results: result('delivered') });
    await untilLog(logFrom, 'message.acked');
    await a.close();
  }
  // Heartbeats: the runtime answers them; does the isolate run at all?
  const a = await WireAgent.connect(agentUrl, AGENT_TOKEN);
  a.send(hello);
  await a.until(0, hasFrame('welcome'), 'welcome');
  out.push(await profiled(outDir, '200 heartbeats', 0, async () => {
    for (let i = 0; i < 200; i++) {
      const from = a.received.length;
      a.ping();
      await a.until(from, (r) => r.some((x) => x.kind === 'pong'), 'pong');
    }
  }));
  await a.close();
  return out;
}

// ---- woken: a warm isolate, a queue object that was evicted -----------------------------------

/**
 * workerd evicts an idle Durable Object after 10 s (Cloudflare after a minute or two): the
 * next message finds the isolate, and its compiled code, still there but builds the object
 * anew (its constructor opens the database and checks the schema). With no agent connected,
 * each run waits for that eviction and measures the next email() + ingest.
 */
async function wokenRuns(t: Template, size: number): Promise<void> {
  const ids: string[] = [];
  for (let run = 0; run < COLD_RUNS; run++) {
    runNo = run;
    await new Promise((r) => setTimeout(r, EVICTED_AFTER_MS));
    await measure('woken: email() + ingest (warm isolate, object evicted after 10 s idle)', size, async () => { ids.push(await post(t, `cloud-woken-${run}`)); });
  }
  // Not delivered: out of the queue, so that the next agents get only their own messages.
  for (const id of ids) await admin(`/admin/messages/${id}/delete`, 'POST');
}

// ---- cold: the first invocations of a fresh isolate and object ------------------------------

/**
 * On the edge a quiet personal domain's Worker isolate and queue object are often evicted
 * between messages, and the next message runs in fresh ones: V8 compiles each function the
 * first time it runs, and the object opens its database (schema check) in its constructor.
 * Each cold run restarts workerd and measures, in a fresh isolate, the first email() + ingest
 * (no agent yet: the object too starts there), then connect + hello, then the agent's first body
 * fetch, each with its own window, into `samples` under "cold: …".
 */
async function coldRuns(t: Template, size: number, perfDir: string): Promise<void> {
  for (let run = 0; run < COLD_RUNS; run++) {
    runNo = run;
    await rt.restart();
    workerd = childrenNamed(process.pid, 'workerd').find((p) => !r2pids.has(p)) ?? -1;
    tid = workerd;
    await untilQuiet(workerd, tid);
    const from = samples.length;
    const coldTracer = await startTracer(join(perfDir, `cold-owners-${size}-${run}.data`));
    const sampler = scopeWhyNot === null ? await startScopeSampler(tid, join(perfDir, `cold-${size}-${run}.data`), HZ) : null;
    // Every request here first passes Miniflare's entry worker, whose own first run (its
    // compile) the edge does not have: this measures that floor and takes it out of the rest.
    await measure('cold: first GET /healthz (Miniflare\'s entry worker and the Worker\'s routing, compiled)', size, async () => {
      await (await fetch(new URL('/healthz', base))).arrayBuffer();
    });
    await measure('cold: email() + ingest (then: the Worker\'s email path and a fresh object)', size, async () => { await post(t, `cloud-cold-${size}-${run}`); });
    let agent: WireAgent | undefined;
    await measure('cold: connect + hello', size, async () => {
      agent = await WireAgent.connect(agentUrl, AGENT_TOKEN);
      agent.send(hello);
      await agent.until(0, hasFrame('welcome'), 'welcome');
    });
    if (!agent) throw new Error('unreachable');
    const a = agent;
    await a.until(0, hasFrame('message'), 'message frame');
    const id = a.last('message')?.id ?? '';
    await untilQuiet(workerd, tid);
    if (R2) await fetchBody(a, size, id, 'cold: agent GET /agent/body/<id> (first)');
    // In chunks (--chunks, --inline): the hello gave no credit; the ack waits for the whole message.
    else await pumpToEnd(a, size, id, 0);
    const logFrom = logs.length;
    await measure('cold: ack delivered (first)', size, async () => {
      a.send({ type: 'ack', id, results: result('delivered') });
      await untilLog(logFrom, 'message.acked');
    });
    await a.close();
    if (sampler) await applyScope(sampler, join(perfDir, `cold-${size}-${run}.data`), `.cold-${size}-${run}`, samples.slice(from), coldTracer);
  }
}

// ---- memory: several agents, 25 MiB each, at once ------------------------------------------

interface MemoryResult { agents: number; size: number; heapBefore: number; peakHeap: number; peakBacking: number; rssBefore: number; peakRss: number; samples: number }

/**
 * `agents` scripted agents each get one `size` message and read its body at the same time
 * (with R2: GET /agent/body; with chunks: credit for all of it at once, as a greedy agent
 * might), while the isolate's heap and ArrayBuffer backing stores are read every few ms over
 * the inspector and workerd's peak RSS is taken from the kernel.
 */
async function memoryRun(agents: number, size: number): Promise<MemoryResult> {
  const session = await inspectIsolate(inspectPort);
  const conns: WireAgent[] = [];
  for (let i = 0; i < agents; i++) {
    const a = await WireAgent.connect(agentUrl, AGENT_TOKEN);
    a.send(hello);
    await a.until(0, hasFrame('welcome'), 'welcome');
    conns.push(a);
  }
  const t = template(size, 'cloud-mem');
  for (let i = 0; i < agents; i++) await post(t, `cloud-mem-${size}-${i}`);
  // Each agent (window 1) has been leased one message by now.
  const ids = await Promise.all(conns.map(async (a) => {
    await a.until(0, hasFrame('message'), 'message frame');
    return a.last('message')?.id ?? '';
  }));
  await untilQuiet(workerd, tid);
  const before = await heapUsage(session);
  resetPeak(workerd);
  const rssBefore = procStatus(workerd)?.rss ?? 0;
  let peakHeap = before.used;
  let peakBacking = before.backing;
  let polls = 0;
  let reading = true;
  const poll = (async () => {
    while (reading) {
      const h = await heapUsage(session);
      peakHeap = Math.max(peakHeap, h.used);
      peakBacking = Math.max(peakBacking, h.backing);
      polls++;
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  await Promise.all(conns.map(async (a, i) => {
    const id = ids[i] ?? '';
    if (R2) {
      const res = await fetch(new URL(`/agent/body/${id}`, base), { headers: { Authorization: `Bearer ${AGENT_TOKEN}` } });
      const got = (await res.arrayBuffer()).byteLength;
      if (got !== size - (a.last('message', id)?.prefix ?? 0)) throw new Error(`memory run: body of ${got} bytes`);
    } else {
      // As a greedy agent: all the credit at once (the object holds at most 8 MiB of it), then
      // 1 MiB back per chunk read, as the real agent grants.
      const from = a.received.length;
      a.send({ type: 'credit', bytes: size });
      let seen = from;
      while (!hasFrame('end', id)(a.received.slice(from))) {
        await a.until(seen, (r) => r.length > 0, 'a chunk or the end');
        for (const x of a.received.slice(seen)) if (x.kind === 'chunk') a.send({ type: 'credit', bytes: x.bytes });
        seen = a.received.length;
      }
    }
  }));
  reading = false;
  await poll;
  const peakRss = procStatus(workerd)?.hwm ?? 0;
  for (const [i, a] of conns.entries()) {
    const logFrom = logs.length;
    a.send({ type: 'ack', id: ids[i] ?? '', results: result('delivered') });
    await untilLog(logFrom, 'message.acked');
    await a.close();
  }
  session.close();
  return { agents, size, heapBefore: before.used, peakHeap, peakBacking, rssBefore, peakRss, samples: polls };
}

// ---- main ----------------------------------------------------------------------------------

/** Says what failed, with the Worker's last log lines, and ends the run. */
async function fail(what: string, err: unknown): Promise<never> {
  say(`${what}: ${err instanceof Error ? `${err.stack} (cause: ${String(err.cause)})` : String(err)}\nlast log lines:\n${logs.slice(-15).join('\n')}`);
  await rt.dispose();
  process.exit(1);
}

const load0 = loadavg();
say(`bench:cloud — workerd pid ${workerd}, isolate thread ${tid} (${isolate.comm}); loadavg ${load0.map((x) => x.toFixed(2)).join(' ')}; ${new Date().toISOString()}`);
const storageLog: Record<string, unknown>[] = [];
try {
  // Warm-up: the first invocations compile the Worker's code (lazily, function by function,
  // then in tiers as they run again): not measured here. The cold runs below measure them.
  for (let i = 0; i < WARM_RUNS; i++) await oneRun(template(10 * KiB, 'cloud-warm'), 10 * KiB, -1, null);
  samples.length = 0;
  const sampler = scopeWhyNot === null ? await startScopeSampler(tid, join(dir, 'perf.data'), HZ) : null;
  for (const { bytes, runs } of SIZES) {
    const t = template(bytes, `cloud-${bytes}`);
    for (let r = 0; r < runs; r++) await oneRun(t, bytes, r, r === 0 ? storageLog : null);
    say(`  ${sizeLabel(bytes)}: ${runs} runs done; loadavg ${loadavg()[0]?.toFixed(2)}`);
  }
  if (!args['no-cold']) await wokenRuns(template(10 * KiB, 'cloud-woken'), 10 * KiB);
  if (sampler) await applyScope(sampler, join(dir, 'perf.data'), '', samples, tracer);
  tracer = null;
} catch (err) {
  await fail('failed', err);
}
let memory: MemoryResult | null = null;
if (!args['no-memory']) {
  const top = Math.max(...SIZES.map((x) => x.bytes));
  try {
    memory = await memoryRun(3, top);
  } catch (err) {
    await fail('memory run failed', err);
  }
}
let profiles: ProfileResult[] = [];
const date = new Date().toISOString().slice(0, 10);
if (!args['no-profile']) {
  const outDir = join(ROOT, 'bench', 'results', 'profiles', `cloud-${date}-${process.pid}`);
  await mkdir(outDir, { recursive: true });
  profiles = await profileRuns(outDir);
}
if (!args['no-cold']) {
  for (const size of [...new Set([10 * KiB, Math.max(...SIZES.map((x) => x.bytes))])]) await coldRuns(template(size, `cloud-cold-${size}`), size, dir);
}
const load1 = loadavg();
await rt.dispose();
await r2host?.dispose();
await rm(dir, { recursive: true, force: true });

// ---- report ----------------------------------------------------------------------------------

const kinds = [...new Set(samples.map((s) => s.kind))];
const sizes = SIZES.map((s) => s.bytes);
interface Row { kind: string; size: number; n: number; p50: number; max: number; threadP50: number; threadMax: number; processP50: number; over10: number }
const rows: Row[] = [];
const scoped = samples.every((x) => x.scopeMs !== undefined);
// Split by owner: the edge gives the Worker's invocation and the object's each their own 10 ms;
// Miniflare's entry worker (local only) is in neither.
const owned = scoped && samples.every((x) => x.ownerMs !== undefined);
type Part = 'worker' | 'object' | 'start' | 'both';
const PART_LABEL: Record<Part, string> = {
  worker: ' — the Worker\'s part', object: ' — the object\'s part',
  start: ' — of the object\'s part: its start (workerd opens its database, before its JS)', both: '',
};
const cpuOf = (x: Sample, part: Part = 'both'): number => (part === 'both' ? x.scopeMs ?? x.threadMs : x.ownerMs?.[part] ?? 0);
say(owned
  ? '\nCPU per invocation, ms, in the CPU-limit scope (workerd main thread, less perf\'s own cost, × the share of perf samples under IoContext::runImpl), each row the Worker\'s or the object\'s part (uprobes on IoContext tell them apart; Miniflare\'s entry worker is in neither), median / max over the runs [n]; (main thread in all: median / max)'
  : scoped
    ? `\nCPU per invocation, ms, in the CPU-limit scope (workerd main thread, less perf's own cost, × the share of perf samples under IoContext::runImpl), the Worker's and the object's invocations together (not split: ${ownersWhyNot ?? '?'}), median / max over the runs [n]; (main thread in all: median / max)`
    : `\nCPU per invocation, ms: workerd main thread (isolate + its I/O), median / max over the runs [n]; (whole workerd process, median). The CPU-limit scope is not measured: ${scopeWhyNot ?? '?'}`);
say(`| invocation | ${sizes.map(sizeLabel).join(' | ')} |`);
say(`|---|${sizes.map(() => '---:').join('|')}|`);
const partsOf = (kind: string): Part[] => {
  if (!owned) return ['both'];
  const s = samples.filter((x) => x.kind === kind);
  // A part that never ran (a heartbeat: the runtime answers it; a frame only the object gets)
  // gets no row, unless neither ran.
  const ran = (['worker', 'object', 'start'] as const).filter((p) => s.some((x) => cpuOf(x, p) > 0));
  return ran.length > 0 ? ran : ['object'];
};
for (const kind of kinds) for (const part of partsOf(kind)) {
  const label = `${kind}${PART_LABEL[part]}`;
  const cells = sizes.map((size) => {
    const s = samples.filter((x) => x.kind === kind && x.size === size);
    if (s.length === 0) return '–';
    const cpu = summarize(s.map((x) => cpuOf(x, part)));
    const th = summarize(s.map((x) => x.threadMs));
    const pr = summarize(s.map((x) => x.processMs));
    rows.push({ kind: label, size, n: cpu.n, p50: cpu.p50, max: cpu.max, threadP50: th.p50, threadMax: th.max, processP50: pr.p50, over10: s.filter((x) => cpuOf(x, part) > 10).length });
    return scoped
      ? `${cpu.p50.toFixed(2)} / ${cpu.max.toFixed(2)} [${cpu.n}] (${th.p50.toFixed(1)} / ${th.max.toFixed(1)})`
      : `${th.p50.toFixed(2)} / ${th.max.toFixed(2)} [${th.n}] (${pr.p50.toFixed(2)})`;
  });
  say(`| ${label} | ${cells.join(' | ')} |`);
}

// Durable Object requests per delivered message (Cloudflare bills incoming WebSocket messages 20:1):
// the live path with the real agent: one ingest RPC; credit frames, one per 1 MiB read; one ack.
// With R2: the ingestStored RPC and one bodyOf RPC (the Worker asks before serving the body);
// incoming WebSocket messages: the ack alone.
const perMessage = sizes.map((size) => {
  const credits = R2 ? 0 : size / MiB;  // the agent grants 1 MiB once it has read 1 MiB, so a 10 KiB message costs 1/102 of one
  const wsMessages = credits + 1;
  const rpc = R2 ? 2 : 1;
  const requests = rpc + wsMessages / 20;
  const st = storageLog.find((x) => x.size === size) as { stored: Stored | null; delivered: Stored | null; before: Stored | null } | undefined;
  return {
    size, rpc, wsMessages: Math.round(wsMessages * 100) / 100, alarms: 0, requests: Math.round(requests * 1000) / 1000,
    storedChunkBytes: st?.stored?.chunkBytes ?? null, storedRowBytes: st?.stored?.messageRowBytes ?? null,
    dbGrowthWhileQueued: st?.stored && st.before ? st.stored.pages - st.before.pages : null,
    deliveredRowBytes: st?.delivered && st.delivered.delivered > 0 ? Math.round(st.delivered.deliveredRowBytes / st.delivered.delivered) : null,
  };
});
say('\nDurable Object requests and storage per delivered message (live path, real agent, no retry)');
say(`| size | RPC${R2 ? ' (ingestStored, bodyOf)' : ' (ingest)'} | incoming WS messages (${R2 ? 'ack' : 'credit + ack'}) | DO requests (WS ÷ 20) | chunk bytes stored | message row bytes | DB file growth while queued | delivered (dedupe) row after ack |`);
say('|---|---:|---:|---:|---:|---:|---:|---:|');
for (const p of perMessage) {
  say(`| ${sizeLabel(p.size)} | ${p.rpc} | ${p.wsMessages} | ${p.requests} | ${p.storedChunkBytes} | ${p.storedRowBytes} | ${p.dbGrowthWhileQueued} | ${p.deliveredRowBytes} |`);
}
// Fixed per day while an agent is connected: a silence-check alarm every AGENT_SILENT_MS/2
// (default 90 s → 45 s) = 1,920 alarms; heartbeats every 10 s = 8,640 auto-responses, which
// never wake the object (counted here as 0; at 20:1 they would be 432 requests).
// With R2 each shard's orphan sweep adds an alarm an hour (24 a day, one shard here).
const fixedPerDay = 86_400 / 45 + (BOUND ? 24 : 0);
const allowance = perMessage.map((p) => ({ size: p.size, messagesPerDay: Math.floor((100_000 - fixedPerDay) / p.requests) }));
say(`\nFree plan, 100,000 DO requests/day, minus ${fixedPerDay} alarms a day with an agent online (silence checks${BOUND ? ', orphan sweeps' : ''}): ${allowance.map((x) => `${sizeLabel(x.size)} ${x.messagesPerDay.toLocaleString('en')} msg/day`).join(', ')}`);

if (profiles.length > 0) {
  say('\nProfiles (V8 sampling, 100 µs; sampled ms are wall time between samples, so under load they exceed CPU: read them as shares): thread CPU with the profiler on, and the sampled time split by what was on the stack');
  for (const p of profiles) {
    say(`- ${p.phase}, ${sizeLabel(p.size)}: thread ${p.threadMs.toFixed(1)} ms; ${Object.entries(p.split).map(([k, v]) => `${k} ${v}`).join(', ')} ms`);
    say(`    top self: ${p.summary.topSelf.slice(0, 8).map((e) => `${e.name} ${e.ms} ms`).join('; ')}`);
  }
}

if (memory) {
  const m = memory;
  const mb = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;
  say(`\nMemory, ${m.agents} agents reading a ${sizeLabel(m.size)} body each at once (${R2 ? 'GET /agent/body' : 'chunks: all credit at once, then 1 MiB per chunk read'}): isolate JS heap ${mb(m.heapBefore)} before, peak ${mb(m.peakHeap)}; ArrayBuffer backing stores peak ${mb(m.peakBacking)} (${m.samples} readings); workerd RSS ${mb(m.rssBefore)} before, peak ${mb(m.peakRss)}`);
}

if (failures.length > 0) say(`\nFAILED invocations (not in the table): ${failures.map((f) => `${f.kind}, ${sizeLabel(f.size)} run ${f.run}: ${f.error}`).join('; ')}`);
const none: Row = { kind: '?', size: 0, max: Number.NaN, n: 0, p50: 0, threadP50: 0, threadMax: Number.NaN, processP50: 0, over10: 0 };
const worst = rows.reduce((m, r) => (r.max > m.max ? r : m), rows[0] ?? none);
const worstThread = rows.reduce((m, r) => (r.threadMax > m.threadMax ? r : m), rows[0] ?? none);
// One file per run: a partial run must not overwrite a full one.
const file = join(ROOT, 'bench', 'results', `cloud-${new Date().toISOString().slice(0, 16).replace(/[T:]/g, '-')}.json`);
await writeFile(file, `${JSON.stringify({
  date: new Date().toISOString(), loadavg: { start: load0, end: load1 }, workerdPid: workerd,
  method: owned
    ? `per invocation, one at a time, on an idle local workerd (Miniflare): schedstat CPU of workerd's main thread, less perf's own cost per sample, × the share of perf cpu-clock samples (${HZ} Hz, frame-pointer chains) with IoContext::runImpl on the stack (the CPU-limit scope), split into the Worker's and the object's invocations by uprobes on IoContext's constructor and runImpl (the context each sample ran in); Miniflare's entry worker in neither`
    : scoped
    ? `per invocation, one at a time, on an idle local workerd (Miniflare): schedstat CPU of workerd's main thread, less perf's own cost per sample, × the share of perf cpu-clock samples (${HZ} Hz, frame-pointer chains) with IoContext::runImpl on the stack (the CPU-limit scope)`
    : 'schedstat CPU of workerd main thread (isolate + I/O loop) per invocation, one at a time, on an idle runtime; local workerd via Miniflare',
  perfCost, sizes: SIZES, bodies: R2 ? 'R2 (in a second workerd process)' : INLINE ? 'inline (R2 bound, every size kept in the object)' : 'chunks', rows, failures, perMessage, allowance, fixedAlarmsPerDay: fixedPerDay, memory,
  profiles: profiles.map((p) => ({ phase: p.phase, size: p.size, threadMs: p.threadMs, split: p.split, topSelf: p.summary.topSelf, topInclusive: p.summary.topInclusive })),
  samples,
}, null, 1)}\n`);
say(`\nwrote ${file}; loadavg at the end ${load1.map((x) => x.toFixed(2)).join(' ')}`);
if (scoped) say(`max main-thread CPU per invocation (CPU-limit scope and the runtime's own I/O): ${worstThread.threadMax.toFixed(1)} ms (${worstThread.kind}, ${sizeLabel(worstThread.size)})`);
say(`max CPU per invocation: ${worst.max.toFixed(1)} ms (${worst.kind}, ${sizeLabel(worst.size)})`);
