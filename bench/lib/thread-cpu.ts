// CPU time of one thread, in nanoseconds, from /proc/<pid>/task/<tid>/schedstat (the
// scheduler's own account: exact, not the 10 ms ticks of /proc/<pid>/stat), and a wait for a
// thread to have nothing left to do, so that one invocation can be measured alone.
import { readdirSync, readFileSync } from 'node:fs';

export interface ThreadInfo { tid: number; comm: string }

/** Every thread of `pid` with its name (workerd: "workerd" runs the isolate and the I/O loop). */
export function threadsOf(pid: number): ThreadInfo[] {
  return readdirSync(`/proc/${pid}/task`).map((t) => ({
    tid: Number(t), comm: readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim(),
  }));
}

/** Nanoseconds this thread has run on a CPU; -1 when it is gone. */
export function threadCpuNs(pid: number, tid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    return -1;
  }
}

/** Nanoseconds all threads of `pid` have run (threads that ended meanwhile are missed). */
export function processCpuNs(pid: number): number {
  let sum = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    const ns = threadCpuNs(pid, Number(t));
    if (ns > 0) sum += ns;
  }
  return sum;
}

/** R (running or waiting for a CPU), S (sleeping), D (uninterruptible, e.g. fsync)… */
function threadState(pid: number, tid: number): string {
  try {
    const text = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2, text.lastIndexOf(')') + 3);
  } catch {
    return '?';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Resolves once the thread has been asleep (state S) with an unchanged CPU time for `quietMs`.
 * A thread that waits for a CPU on a loaded machine shows R, not S, so a busy machine delays
 * this wait but does not end it early. Fails after `maxMs`.
 */
export async function untilQuiet(pid: number, tid: number, quietMs = 25, maxMs = 30_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  let last = threadCpuNs(pid, tid);
  let since = performance.now();
  for (;;) {
    await sleep(2);
    const now = threadCpuNs(pid, tid);
    if (now !== last || threadState(pid, tid) !== 'S') {
      last = now;
      since = performance.now();
    } else if (performance.now() - since >= quietMs) {
      return;
    }
    if (Date.now() > deadline) throw new Error(`thread ${tid} of ${pid} still busy after ${maxMs} ms`);
  }
}

/** Resolves once the thread's CPU time has moved past `fromNs` (something ran). */
export async function untilRan(pid: number, tid: number, fromNs: number, maxMs = 10_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  while (threadCpuNs(pid, tid) === fromNs) {
    if (Date.now() > deadline) throw new Error(`thread ${tid} of ${pid} did not run within ${maxMs} ms`);
    await sleep(1);
  }
}
