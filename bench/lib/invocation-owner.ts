// Whose invocation a perf sample belongs to. On the edge the Worker's email() and the queue
// object's RPC are two invocations, each with its own 10 ms; locally both run on workerd's
// one main thread, next to Miniflare's entry worker (which the edge does not have). Every
// entry into JS is IoContext::runImpl on one IoContext: a Worker's request has an IoContext of
// its own, an object one for its life (IoContext::IoContext(thread, worker, actor, limits)).
// Two uprobes tell them apart: one at IoContext's constructor (the context, its Worker, its
// actor or none) and one at runImpl's entry (which context runs now). A sample in the scope
// belongs to the context of the last runImpl entry before it: workerd never nests one
// context's runImpl in another's (cross-context calls are promises through the event loop).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { firstAtOrAfter, HINT_LOCAL, HINT_OBJECT, type ScopeSamples } from './cpu-scope.ts';

/** The owner of a sample: the Worker's own code, the queue object, or Miniflare's (local only). */
export type Owner = 'worker' | 'object' | 'local';

const TRACEFS = '/sys/kernel/tracing';
const GROUP = 'mailbridge';
const CTOR = '_ZN7workerd9IoContextC2ERNS_13ThreadContextEN2kj3OwnIKNS_6WorkerEDnEENS3_5MaybeIRNS5_5ActorEEENS4_INS_13LimitEnforcerEDnEE';
const RUN_IMPL = '_ZN7workerd9IoContext7runImplERNS0_8RunnableENS_6Worker8LockTypeEN2kj5MaybeINS_9InputGate4LockEEENS_30IoContext_Runnable_ExceptionalE';

/** File offset of each symbol in an ELF executable (nm's address less its segment's vaddr − offset). */
function fileOffsets(binary: string, symbols: string[]): Map<string, number> | string {
  const nm = spawnSync('nm', [binary], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (nm.error || nm.status !== 0) return `nm ${binary}: ${nm.error?.message ?? nm.stderr}`;
  const re = spawnSync('readelf', ['-lW', binary], { encoding: 'utf8' });
  if (re.error || re.status !== 0) return `readelf: ${re.error?.message ?? re.stderr}`;
  const loads = [...re.stdout.matchAll(/LOAD\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)/g)]
    .map((m) => ({ off: parseInt(m[1] ?? '0', 16), vaddr: parseInt(m[2] ?? '0', 16), size: parseInt(m[3] ?? '0', 16) }));
  const out = new Map<string, number>();
  for (const line of nm.stdout.split('\n')) {
    const [addr = '', , name = ''] = line.split(' ');
    if (!symbols.includes(name)) continue;
    const a = parseInt(addr, 16);
    const seg = loads.find((l) => a >= l.vaddr && a < l.vaddr + l.size);
    if (seg) out.set(name, a - seg.vaddr + seg.off);
  }
  const missing = symbols.filter((s) => !out.has(s));
  return missing.length > 0 ? `${binary} lacks ${missing.join(', ')}` : out;
}

/**
 * Installs the two uprobes on `binary` (workerd); null when done, else why not (not root, no
 * uprobes in the kernel, a workerd whose symbols moved).
 */
export function installProbes(binary: string): string | null {
  if (process.getuid?.() !== 0) return 'uprobes need root';
  if (!existsSync(`${TRACEFS}/uprobe_events`)) {
    spawnSync('mount', ['-t', 'tracefs', 'nodev', TRACEFS]);
    if (!existsSync(`${TRACEFS}/uprobe_events`)) return `no ${TRACEFS}/uprobe_events (tracefs, CONFIG_UPROBE_EVENTS)`;
  }
  const offsets = fileOffsets(binary, [CTOR, RUN_IMPL]);
  if (typeof offsets === 'string') return offsets;
  const events = `${TRACEFS}/uprobe_events`;
  // x86-64: `this` in rdi; the Own<const Worker> and the Maybe<Actor&> are passed by
  // reference (rdx, rcx): the Worker pointer is the Own's second word, the actor the Maybe's only one.
  const wanted = [
    { name: 'ioctx_new', offset: offsets.get(CTOR) ?? 0, args: 'ctx=%di:x64 worker=+8(%dx):x64 actor=+0(%cx):x64' },
    { name: 'run_impl', offset: offsets.get(RUN_IMPL) ?? 0, args: 'ctx=%di:x64' },
  ];
  try {
    for (const w of wanted) {
      const now = readFileSync(events, 'utf8').split('\n').find((l) => l.startsWith(`p:${GROUP}/${w.name} `));
      const at = now ? /^\S+ (\S+):(0x[0-9a-f]+) /.exec(now) : null;
      if (at && at[1] === binary && Number(at[2]) === w.offset) continue;  // already there (perhaps in use by another run)
      if (now) writeFileSync(events, `-:${GROUP}/${w.name}\n`, { flag: 'a' });
      writeFileSync(events, `p:${GROUP}/${w.name} ${binary}:0x${w.offset.toString(16)} ${w.args}\n`, { flag: 'a' });
    }
  } catch (err) {
    return `uprobe_events: ${err instanceof Error ? err.message : String(err)}`;
  }
  return null;
}

export interface OwnerTrace {
  /** CLOCK_MONOTONIC ns of each runImpl entry, ascending, and the owner of its context. */
  times: Float64Array;
  owners: Owner[];
  /** runImpl entries on a context whose construction the trace did not see (counted as the Worker's). */
  unknown: number;
}

export interface OwnerTracer { file: string; stop(): Promise<OwnerTrace> }

/** Records both probes on process `pid` (all threads) into `file` until stop(). */
export async function startOwnerTracer(pid: number, file: string): Promise<OwnerTracer> {
  const perf: ChildProcess = spawn('perf', ['record', '-q', '-e', `${GROUP}:ioctx_new`, '-e', `${GROUP}:run_impl`, '-k', 'CLOCK_MONOTONIC', '-p', String(pid), '-o', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  perf.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => perf.once('exit', (code) => resolve(code)));
  await new Promise((r) => setTimeout(r, 500));
  if (perf.exitCode !== null) throw new Error(`perf record (probes) exited: ${stderr.trim()}`);
  return {
    file,
    async stop() {
      perf.kill('SIGINT');
      await exited;
      const script = spawn('perf', ['script', '-F', 'time,event,trace', '--ns', '-i', file], { stdio: ['ignore', 'pipe', 'ignore'] });
      return parseOwnerTrace(createInterface({ input: script.stdout }));
    },
  };
}

/**
 * Reads `perf script -F time,event,trace --ns` of the two probes. A context with an actor is
 * the object's; a context without one is the Worker's when it shares its Worker (isolate) with
 * an object, else Miniflare's (its entry worker).
 */
export async function parseOwnerTrace(lines: AsyncIterable<string> | Iterable<string>): Promise<OwnerTrace> {
  const made = new Map<string, { worker: string; actor: boolean }>();
  const runs: { t: number; ctx: string }[] = [];
  // Contexts are created and freed; an address may come back for another: the latest wins.
  const at: { t: number; ctx: string; worker: string; actor: boolean }[] = [];
  for await (const line of lines) {
    const m = /^\s*(\d+)\.(\d{9}):\s+\S+:(ioctx_new|run_impl):.*?ctx=(0x[0-9a-f]+)(?: worker=(0x[0-9a-f]+) actor=(0x[0-9a-f]+))?/.exec(line);
    if (!m) continue;
    const t = Number(m[1]) * 1e9 + Number(m[2]);
    const ctx = m[4] ?? '';
    if (m[3] === 'ioctx_new') at.push({ t, ctx, worker: m[5] ?? '', actor: (m[6] ?? '0x0') !== '0x0' });
    else runs.push({ t, ctx });
  }
  const ours = new Set(at.filter((c) => c.actor).map((c) => c.worker));
  const owners: Owner[] = [];
  let unknown = 0;
  let next = 0;
  for (const r of runs) {
    while (next < at.length && (at[next]?.t ?? Infinity) <= r.t) {
      const c = at[next++];
      if (c) made.set(c.ctx, { worker: c.worker, actor: c.actor });
    }
    const c = made.get(r.ctx);
    if (!c) unknown++;
    owners.push(!c ? 'worker' : c.actor ? 'object' : ours.has(c.worker) ? 'worker' : 'local');
  }
  return { times: Float64Array.from(runs.map((r) => r.t)), owners, unknown };
}

/** The owner of whatever ran in the scope at monotonic time `t`: the last runImpl entry's context. */
export function ownerAt(trace: OwnerTrace, t: number): Owner | null {
  const next = firstAtOrAfter(trace.times, t, true);
  return next === 0 ? null : trace.owners[next - 1] ?? null;
}

export interface OwnedShare {
  samples: number; inScope: number; worker: number; object: number; local: number;
  /** Of `object`: the object being started by local workerd (HINT_OBJECT), before any of its JS. */
  start: number;
}

/**
 * Samples in [t0, t1) (monotonic ns); those in the scope split by their owner: a stack's hint
 * first (an object being started, stdout log formatting), else the context that ran (none
 * known: the Worker's).
 */
export function shareByOwner(s: ScopeSamples, trace: OwnerTrace, t0: number, t1: number): OwnedShare {
  const out: OwnedShare = { samples: 0, inScope: 0, worker: 0, object: 0, local: 0, start: 0 };
  for (let i = firstAtOrAfter(s.times, t0); i < s.times.length && (s.times[i] ?? Infinity) < t1; i++) {
    out.samples++;
    if ((s.inScope[i] ?? 0) === 0) continue;
    out.inScope++;
    const hint = s.hint[i] ?? 0;
    if (hint === HINT_OBJECT) out.start++;
    out[hint === HINT_OBJECT ? 'object' : hint === HINT_LOCAL ? 'local' : ownerAt(trace, s.times[i] ?? 0) ?? 'worker']++;
  }
  return out;
}
