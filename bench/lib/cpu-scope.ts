// Which part of a workerd thread's CPU time falls inside the scope that Cloudflare's CPU
// limit counts. In workerd (src/workerd/io/io-context.c++), every entry into a Worker's JS goes
// through IoContext::runImpl, which takes the isolate lock and then holds
// `limitEnforcer->enterJs(...)` while the JS, the microtasks and the native calls they make
// (SQLite, digests, ws.send's framing) run; limit-enforcer.h: enterJs is "called just after
// taking the isolate lock, before executing JavaScript code, to enforce limits on that code
// execution, particularly the CPU limit". What runs outside it is the runtime's event loop:
// HTTP parsing, socket reads and writes, and native stream pumps (a body piped into R2 or
// returned as a response).
//
// perf samples the thread's on-CPU time (cpu-clock, with frame-pointer call chains, which
// workerd keeps); a sample is in the scope when IoContext::runImpl is on its stack. A stack
// that does not reach the thread's bottom frame (cut off at perf's depth limit) counts as in
// the scope, so that a deep JS stack can only make the figure larger. The bench multiplies the
// exact thread time of an invocation (schedstat) by the share of its samples in the scope.
import { Miniflare } from 'miniflare';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { childrenNamed } from './proc.ts';
import { summarize } from './stats.ts';
import { threadCpuNs, untilQuiet } from './thread-cpu.ts';

const SCOPE_FRAME = 'workerd::IoContext::runImpl';
/** libc calls made only by workerd's event loop (never by JS, SQLite or a native API JS calls). */
const EVENT_LOOP_CALLS = /^(epoll_p?wait|splice)$/;
/** The bottom of the main thread's stack: a sample that reaches it has its whole chain. */
const BOTTOM_FRAMES = ['__libc_start_call_main', 'main'];
/**
 * Local workerd starts a Durable Object inside the caller's call on its stub (opening its
 * SQLite database, constructing it); on the edge that happens where the object runs, so it is
 * the object's.
 */
const ACTOR_START = 'workerd::server::Server::WorkerService::ActorNamespace::ActorContainer::start';
/**
 * console.log in local workerd (stdout mode) formats each line with a JS module it loads on
 * the first call (node-internal:internal_inspect's formatLog) and writes it to stdout; on the
 * edge (worker.c++, Worker::handleLog) a line is JSON-serialised for the trace instead. The
 * call into V8's own console (which feeds an inspector) is made on both.
 */
const LOG_CALL = 'workerd::Worker::handleLog';
const V8_CONSOLE = /V8Console|Builtin_Console/;

export interface ScopeSamples {
  /** CLOCK_MONOTONIC nanoseconds of each sample, ascending (process.hrtime.bigint()'s clock). */
  times: Float64Array;
  /** 1 when the sample is in the CPU-limit scope (or its stack was cut off), else 0. */
  inScope: Uint8Array;
  /** Whose work a sample is by its stack alone, whichever context ran it: 0 the context's, HINT_OBJECT, HINT_LOCAL. */
  hint: Uint8Array;
}

/** A Durable Object being started (ACTOR_START): the object's. */
export const HINT_OBJECT = 1;
/** stdout log formatting that the edge does not do (LOG_CALL): local only. */
export const HINT_LOCAL = 2;

export interface ScopeSampler { stop(): Promise<ScopeSamples> }

/** null when perf can sample here, else why not (no perf, no permission, no cpu-clock). */
export function perfUnavailable(): string | null {
  const r = spawnSync('perf', ['stat', '-e', 'cpu-clock', 'true'], { encoding: 'utf8' });
  if (r.error) return `perf: ${r.error.message}`;
  return r.status === 0 ? null : `perf stat failed: ${r.stderr.trim().split('\n').pop() ?? ''}`;
}

/** Starts sampling thread `tid` at `hz` into `file` until stop(). */
export async function startScopeSampler(tid: number, file: string, hz = 4000): Promise<ScopeSampler> {
  const perf: ChildProcess = spawn('perf', ['record', '-q', '-e', 'cpu-clock', '-F', String(hz), '-g', '-k', 'CLOCK_MONOTONIC', '-t', String(tid), '-o', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  perf.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => perf.once('exit', (code) => resolve(code)));
  // perf needs a moment to attach; samples before that are lost, not wrong.
  await new Promise((r) => setTimeout(r, 500));
  if (perf.exitCode !== null) throw new Error(`perf record exited: ${stderr.trim()}`);
  return {
    async stop() {
      perf.kill('SIGINT');
      await exited;
      return readSamples(file);
    },
  };
}

function readSamples(file: string): Promise<ScopeSamples> {
  const script = spawn('perf', ['script', '-F', 'time,ip,sym', '--ns', '-i', file], { stdio: ['ignore', 'pipe', 'ignore'] });
  return classify(createInterface({ input: script.stdout }));
}

/** Reads `perf script -F time,ip,sym --ns` output: each sample's time and whether it is in the scope. */
export async function classify(lines: AsyncIterable<string> | Iterable<string>): Promise<ScopeSamples> {
  const times: number[] = [];
  const flags: number[] = [];
  const hints: number[] = [];
  let inScope = false;
  let actorStart = false;
  let logCall = false;
  let v8Console = false;
  let whole = false;
  let firstUser: string | null = null;
  let userFrames = 0;
  let open = false;
  const close = (): void => {
    // Out of the scope only when known to be: the whole chain was seen without the scope
    // frame, or the chain is one libc call that only the event loop makes: its wait
    // (epoll_pwait) or kj's zero-copy pump between sockets (splice), whose libc wrappers end
    // the frame-pointer chain. Any other cut chain counts as in.
    const loopIo = userFrames === 1 && firstUser !== null && EVENT_LOOP_CALLS.test(firstUser);
    if (open) {
      flags.push(!inScope && (whole || loopIo) ? 0 : 1);
      hints.push(actorStart ? HINT_OBJECT : logCall && !v8Console ? HINT_LOCAL : 0);
    }
    open = false;
  };
  for await (const line of lines) {
    const stamp = /^\s*(\d+)\.(\d{9}):\s*$/.exec(line);
    if (stamp) {
      close();
      times.push(Number(stamp[1]) * 1e9 + Number(stamp[2]));
      inScope = false;
      actorStart = false;
      logCall = false;
      v8Console = false;
      whole = false;
      firstUser = null;
      userFrames = 0;
      open = true;
      continue;
    }
    const frame = /^\s*([0-9a-f]+) (.*)$/.exec(line);
    if (!open || !frame) continue;
    const [, ip = '', sym = ''] = frame;
    if (ip.startsWith('ffffffff')) continue;  // kernel frames: the syscall or fault under a user frame
    firstUser ??= sym;
    userFrames++;
    if (sym.startsWith(SCOPE_FRAME)) inScope = true;
    else if (BOTTOM_FRAMES.includes(sym)) whole = true;
    else if (sym.startsWith(ACTOR_START)) actorStart = true;
    else if (sym.startsWith(LOG_CALL)) logCall = true;
    else if (V8_CONSOLE.test(sym)) v8Console = true;
  }
  close();
  return { times: Float64Array.from(times), inScope: Uint8Array.from(flags), hint: Uint8Array.from(hints) };
}

/** Samples in [t0, t1) (monotonic ns), and how many of them are in the scope. */
export function shareIn(s: ScopeSamples, t0: number, t1: number): { samples: number; inScope: number } {
  let samples = 0;
  let inScope = 0;
  for (let i = firstAtOrAfter(s.times, t0); i < s.times.length && (s.times[i] ?? Infinity) < t1; i++) {
    samples++;
    inScope += s.inScope[i] ?? 0;
  }
  return { samples, inScope };
}

/** Index of the first of the ascending `times` at or after `t` (`strictly`: after it). */
export function firstAtOrAfter(times: Float64Array, t: number, strictly = false): number {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const x = times[mid] ?? 0;
    if (x < t || (strictly && x === t)) lo = mid + 1; else hi = mid;
  }
  return lo;
}

/**
 * perf's own cost per sample, in ms of the sampled thread's CPU time: the timer interrupt (a
 * VM exit here) and the copy of the call chain land on the thread's schedstat. Measured on a
 * workerd of its own that loops in JS (a short stack: a deep one costs perf more, so this is
 * the least it costs), as the median time of one request with perf sampling at `hz` and
 * without, over the samples taken. The bench takes `samples × this` off each window's thread
 * time, so that the profiler's work is not billed to the Worker.
 */
export async function perfCostPerSample(hz: number, dir: string): Promise<{ ms: number; bare: number; sampled: number; samples: number }> {
  const before = new Set(childrenNamed(process.pid, 'workerd'));
  const mf = new Miniflare({
    modules: true, compatibilityDate: '2026-04-01',
    script: 'export default { async fetch() { let x = 0; for (let i = 0; i < 3_000_000; i++) x = (x + i * 7) % 1000003; return new Response(String(x)); } };',
  });
  try {
    const url = await mf.ready;
    const pid = childrenNamed(process.pid, 'workerd').find((p) => !before.has(p)) ?? -1;
    if (pid < 0) throw new Error('perfCostPerSample: no workerd child');
    const once = async (): Promise<{ ms: number; t0: number; t1: number }> => {
      await untilQuiet(pid, pid);
      const t0 = Number(process.hrtime.bigint());
      const c0 = threadCpuNs(pid, pid);
      await (await fetch(url)).text();
      await untilQuiet(pid, pid);
      return { ms: (threadCpuNs(pid, pid) - c0) / 1e6, t0, t1: Number(process.hrtime.bigint()) };
    };
    const median = (xs: number[]): number => summarize(xs).p50;
    for (let i = 0; i < 5; i++) await once();
    const bare: number[] = [];
    for (let i = 0; i < 9; i++) bare.push((await once()).ms);
    const sampler = await startScopeSampler(pid, `${dir}/perf-cost.data`, hz);
    const runs: { ms: number; t0: number; t1: number }[] = [];
    for (let i = 0; i < 9; i++) runs.push(await once());
    const s = await sampler.stop();
    const sampled = median(runs.map((r) => r.ms));
    const samples = median(runs.map((r) => shareIn(s, r.t0, r.t1).samples));
    const b = median(bare);
    return { ms: samples > 0 ? Math.max(0, (sampled - b) / samples) : 0, bare: b, sampled, samples };
  } finally {
    await mf.dispose();
  }
}
