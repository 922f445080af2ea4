// Child processes and what /proc says about them: peak and current RSS, CPU time of
// a whole process tree, and the machine's total busy time (to see other load).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';

export const NODE = process.execPath;
export const NODE_FLAGS = ['--disable-warning=ExperimentalWarning'];

let ticks = 0;
/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ, almost always 100). */
export function clockTicks(): number {
  if (ticks) return ticks;
  try {
    ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    ticks = 100;
  }
  return ticks;
}

export interface Child {
  proc: ChildProcess;
  pid: number;
  /** Every stdout line so far is offered to each waiter; stdout is always drained. */
  waitLine(match: (line: string) => boolean, ms: number, what: string): Promise<string>;
  onLine(fn: (line: string) => void): void;
  stderr(): string;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals, ms?: number): Promise<void>;
}

export function spawnChild(cmd: string, args: string[], env: Record<string, string>, cwd?: string): Child {
  const proc = spawn(cmd, args, { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['pipe', 'pipe', 'pipe'], cwd });
  if (proc.pid === undefined) throw new Error(`could not spawn ${cmd}`);
  const pid = proc.pid;
  let buf = '';
  let err = '';
  const lines: string[] = [];
  const listeners = new Set<(line: string) => void>();
  proc.stdout?.on('data', (c: Buffer) => {
    buf += c.toString('utf8');
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (lines.length < 200) lines.push(line);
      for (const l of listeners) l(line);
    }
  });
  proc.stderr?.on('data', (c: Buffer) => { if (err.length < 100_000) err += c.toString('utf8'); });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code, sig) => resolve(code ?? (sig ? 128 : null))));
  const child: Child = {
    proc, pid, exited,
    stderr: () => err,
    onLine: (fn) => { listeners.add(fn); },
    waitLine(match, ms, what) {
      return new Promise((resolve, reject) => {
        const found = lines.find(match);
        if (found !== undefined) return resolve(found);
        const timer = setTimeout(() => { cleanup(); reject(new Error(`${cmd}: no ${what} within ${ms} ms\n${err.slice(-3000)}`)); }, ms);
        const l = (line: string): void => { if (match(line)) { cleanup(); resolve(line); } };
        const onExit = (): void => { cleanup(); reject(new Error(`${cmd} exited before ${what}\n${err.slice(-3000)}`)); };
        const cleanup = (): void => { clearTimeout(timer); listeners.delete(l); proc.off('exit', onExit); };
        listeners.add(l);
        proc.once('exit', onExit);
      });
    },
    async stop(signal = 'SIGTERM', ms = 30_000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const timer = setTimeout(() => proc.kill('SIGKILL'), ms);
      proc.kill(signal);
      await exited;
      clearTimeout(timer);
    },
  };
  return child;
}

export interface ProcStatus { rss: number; hwm: number }

/** VmRSS and VmHWM (peak resident set) in bytes; null when the process is gone. */
export function procStatus(pid: number): ProcStatus | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 'NaN') * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** Resets VmHWM to the current RSS (Linux: "5" > clear_refs). False when not allowed. */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

interface StatLine { pid: number; ppid: number; comm: string; cpu: number }

function readStat(pid: number): StatLine | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const close = text.lastIndexOf(')');
  const comm = text.slice(text.indexOf('(') + 1, close);
  const f = text.slice(close + 2).split(' ');
  // after "(comm) ": state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based over the whole line
  const num = (i: number): number => Number(f[i - 3] ?? 0);
  return { pid, ppid: num(4), comm, cpu: (num(14) + num(15) + num(16) + num(17)) / clockTicks() };
}

function allStats(): StatLine[] {
  const out: StatLine[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (s) out.push(s);
  }
  return out;
}

/** Pids of `root` and all its descendants, leaving out the subtrees rooted at `skip`. */
export function treePids(root: number, stats: StatLine[] = allStats(), skip: ReadonlySet<number> = new Set()): number[] {
  const kids = new Map<number, number[]>();
  for (const s of stats) kids.set(s.ppid, [...(kids.get(s.ppid) ?? []), s.pid]);
  const live = new Set(stats.map((s) => s.pid));
  const out: number[] = [];
  const stack = [root];
  while (stack.length) {
    const p = stack.pop() as number;
    if (!live.has(p) || (p !== root && skip.has(p))) continue;
    out.push(p);
    stack.push(...(kids.get(p) ?? []));
  }
  return out;
}

/**
 * CPU seconds of process trees: for each live process utime+stime+cutime+cstime.
 * Children that exited were reaped into their parent's cutime/cstime, so the
 * difference of two snapshots counts short-lived workers (Postfix's, Dovecot's) too.
 * A pid named by one entry is left out of the other entries' trees.
 */
export function treeCpu(roots: Record<string, number[]>): Record<string, number> {
  const stats = allStats();
  const byPid = new Map(stats.map((s) => [s.pid, s]));
  const claimed = new Set(Object.values(roots).flat());
  const out: Record<string, number> = {};
  for (const [name, pids] of Object.entries(roots)) {
    const seen = new Set<number>();
    let cpu = 0;
    for (const root of pids) {
      for (const p of treePids(root, stats, claimed)) {
        if (seen.has(p)) continue;
        seen.add(p);
        cpu += byPid.get(p)?.cpu ?? 0;
      }
    }
    out[name] = cpu;
  }
  return out;
}

/** Proportional set size (shared pages split between their users), bytes; 0 when gone. */
export function procPss(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    return Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

/**
 * Memory of a process tree, bytes: for one process its VmRSS; for several the sum of
 * their PSS, so that pages shared between them (libraries, Postfix's and Dovecot's
 * common code) are counted once rather than once per process.
 */
export function treeRss(root: number): number {
  const pids = treePids(root);
  if (pids.length === 1) return procStatus(root)?.rss ?? 0;
  return pids.reduce((a, p) => a + procPss(p), 0);
}

/** The first process whose command line contains `needle` (e.g. a config path). */
export function findPid(needle: string, comm?: string): number | null {
  for (const s of allStats()) {
    if (comm && s.comm !== comm) continue;
    try {
      if (readFileSync(`/proc/${s.pid}/cmdline`, 'utf8').includes(needle)) return s.pid;
    } catch {
      // gone
    }
  }
  return null;
}

/** Direct children of `pid` named `comm` (e.g. the workerd Miniflare starts). */
export function childrenNamed(pid: number, comm: string): number[] {
  return allStats().filter((s) => s.ppid === pid && s.comm === comm).map((s) => s.pid);
}

/** Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat. */
export function machineBusy(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...
  const busy = (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
  return busy / clockTicks();
}

/** Samples summed tree RSS every `everyMs` until stopped; returns the maxima. */
export function rssSampler(roots: Record<string, number>, everyMs = 20): { stop(): Record<string, number> } {
  const max: Record<string, number> = {};
  const tick = (): void => {
    for (const [name, pid] of Object.entries(roots)) max[name] = Math.max(max[name] ?? 0, treeRss(pid));
  };
  tick();
  const timer = setInterval(tick, everyMs);
  return { stop: () => { clearInterval(timer); tick(); return max; } };
}

/**
 * Pins `root` and (with `tree`) every descendant, all their threads, to `cpus` (taskset list
 * syntax, e.g. '1').
 * Processes forked later inherit it (Dovecot's lmtp workers from its master). Returns the
 * pids pinned; throws if taskset is missing or refuses.
 */
export function pinTree(root: number, cpus: string, tree = true): number[] {
  const pids = tree ? treePids(root) : [root];
  for (const p of pids) {
    try {
      execFileSync('taskset', ['-a', '-c', '-p', cpus, String(p)], { stdio: 'ignore' });
    } catch (err) {
      // A process that exited meanwhile is fine; anything else is not.
      if (procStatus(p) !== null) throw err;
    }
  }
  return pids;
}
