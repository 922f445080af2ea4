// When does a message's file appear in the Maildir? Dovecot writes tmp/ then renames (or
// links) it into new/, which sets the file's ctime. Two clocks see that moment:
//   - inotify (fs.watch) on new/: the callback takes performance.now() synchronously, before
//     reading the file to learn which message it is. Its error is the bench process's
//     event-loop delay at that moment: well under a millisecond when the process is idle,
//     tens of ms when the load generator in the same process is busy (32 connections).
//   - the ctime: set by the kernel at the rename, but from its coarse clock (on this machine
//     one tick = 4 ms, measured at start-up by ctimeGranularity()), so it lags the true
//     moment by 0..1 tick.
// The true moment is therefore in [ctime, min(callback, ctime + tick)]; the bench uses the
// upper end, min(callback, ctime + tick): never early, late by at most one tick when the
// process is busy, by the event-loop delay when it is not. `lags` keeps callback − ctime.
// Files the watcher missed are found by a directory scan and timed ctime + tick (`reconciled`).
import { watch, type FSWatcher } from 'node:fs';
import { chown, mkdir, mkdtemp, open, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ID_RE } from './messages.ts';

export interface Arrival {
  /** The arrival time used: min(watch callback, ctime + tick), on the performance.now() clock. */
  t: number;
  /** performance.now() in the watch callback (NaN if reconciled). */
  tWatch: number;
  /** The file's ctime on the same clock (rename time, coarse kernel clock). */
  ctime: number;
  file: string;
  reconciled: boolean;
}

export class MaildirWatcher {
  readonly #dirs: string[];
  readonly #watchers: FSWatcher[] = [];
  readonly #seenFiles = new Set<string>();
  readonly #arrivals = new Map<string, Arrival>();
  readonly #waiters = new Set<() => void>();
  #pending = 0;
  #paused = false;
  readonly lags: number[] = [];

  readonly #tickMs: number;
  readonly #settle: Settle;

  /**
   * `maildirs`: Maildir roots (each holding new/ cur/ tmp/), which must exist; `tickMs`: ctime
   * granularity; `settle`: how long clear() waits for Dovecot's writes to end (freshMaildir).
   */
  constructor(maildirs: string[], tickMs: number, settle: Settle = SETTLE) {
    this.#dirs = maildirs.map((m) => join(m, 'new'));
    this.#tickMs = tickMs;
    this.#settle = settle;
  }

  start(): void {
    for (const dir of this.#dirs) {
      const w = watch(dir, { persistent: false }, (_event, name) => {
        if (this.#paused || name === null) return;
        const t = performance.now();
        const file = join(dir, name);
        if (this.#seenFiles.has(file)) return;
        this.#seenFiles.add(file);
        this.#pending++;
        void this.#identify(file, t, false).finally(() => { this.#pending--; this.#wake(); });
      });
      this.#watchers.push(w);
    }
  }

  async #identify(file: string, t: number, reconciled: boolean): Promise<void> {
    let fh;
    try {
      fh = await open(file, 'r');
    } catch {
      this.#seenFiles.delete(file);  // gone (our own cleanup) or not there yet
      return;
    }
    try {
      const st = await fh.stat({ bigint: true });
      const buf = Buffer.alloc(4096);
      const { bytesRead } = await fh.read(buf, 0, buf.byteLength, 0);
      const m = ID_RE.exec(buf.subarray(0, bytesRead).toString('latin1'));
      if (!m?.[1]) return;
      const id = m[1].replace(/_+$/, '');
      const ctime = Number(st.ctimeNs) / 1e6 - performance.timeOrigin;
      if (!reconciled) this.lags.push(t - ctime);
      const at = reconciled ? ctime + this.#tickMs : Math.min(t, ctime + this.#tickMs);
      if (!this.#arrivals.has(id)) this.#arrivals.set(id, { t: at, tWatch: reconciled ? Number.NaN : t, ctime, file, reconciled });
    } finally {
      await fh.close();
    }
  }

  #wake(): void {
    for (const w of this.#waiters) w();
  }

  get(id: string): Arrival | undefined {
    return this.#arrivals.get(id);
  }

  /** Waits until every id has arrived or `ms` passed; then scans for files the watcher missed. */
  async waitFor(ids: readonly string[], ms: number): Promise<string[]> {
    const until = performance.now() + ms;
    const missing = (): string[] => ids.filter((id) => !this.#arrivals.has(id));
    while (missing().length > 0 && performance.now() < until) {
      await new Promise<void>((resolve) => {
        const done = (): void => { clearTimeout(timer); this.#waiters.delete(done); resolve(); };
        const timer = setTimeout(done, 200);
        this.#waiters.add(done);
      });
    }
    if (missing().length > 0) await this.reconcile();
    return missing();
  }

  /** Reads every file not yet seen (watch events can be lost on overflow). */
  async reconcile(): Promise<void> {
    for (const dir of this.#dirs) {
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        const file = join(dir, name);
        if (this.#seenFiles.has(file)) continue;
        this.#seenFiles.add(file);
        await this.#identify(file, 0, true);
      }
    }
    while (this.#pending > 0) await new Promise((r) => setTimeout(r, 10));
  }

  /**
   * Gives every mailbox a fresh start between runs: the whole Maildir goes, Dovecot's index and
   * uidlist with it, and empty new/ cur/ tmp/ come back with the same owner. Deleting only the
   * message files is not enough: Dovecot's per-delivery cost grows with the mailbox's history
   * (its index and uidlist, and new/ itself, as an ext4 directory never shrinks), so a path
   * measured late in a run would pay for the deliveries of the paths measured before it.
   * Dovecot may still be writing when a run's last file shows (freshMaildir).
   */
  async clear(): Promise<void> {
    this.#paused = true;
    while (this.#pending > 0) await new Promise((r) => setTimeout(r, 10));
    for (const w of this.#watchers.splice(0)) w.close();
    await Promise.all(this.#dirs.map((dir) => freshMaildir(dirname(dir), this.#settle)));
    this.#seenFiles.clear();
    this.#arrivals.clear();
    this.lags.length = 0;
    this.start();
    this.#paused = false;
  }

  close(): void {
    for (const w of this.#watchers) w.close();
  }
}

/** clear()'s wait for a Maildir to go quiet: no change for `quietMs`, waited for at most `budgetMs`. */
export interface Settle { quietMs: number; budgetMs: number }
const SETTLE: Settle = { quietMs: 100, budgetMs: 3_000 };

let cleared = 0;

/**
 * Replaces the Maildir at `root` with empty new/ cur/ tmp/ of the same owner and mode. Dovecot
 * still writes for a moment after a message's file shows in new/ (its uidlist, through a lock
 * file renamed over it, and its index log), and a recursive rm racing those writes fails with
 * ENOTEMPTY (issue #24: the bench died at its end, writing no results). So: wait (bounded) until
 * nothing in the Maildir changes, move it aside in one rename, which no concurrent write can
 * fail, make the fresh one, and remove the old one, retrying; a leftover only costs disk space
 * until the Dovecot fixture removes its directory.
 */
export async function freshMaildir(root: string, settle: Settle = SETTLE): Promise<void> {
  const st = await stat(root);
  await quiet(root, settle);
  const old = `${root}.cleared-${process.pid}-${cleared++}`;
  await rename(root, old);
  for (const d of [root, ...['new', 'cur', 'tmp'].map((sub) => join(root, sub))]) {
    // recursive: no EEXIST if a late write of Dovecot's made the directory again meanwhile.
    await mkdir(d, { recursive: true, mode: st.mode & 0o7777 });
    await chown(d, st.uid, st.gid);
  }
  await rm(old, { recursive: true, force: true, maxRetries: 10, retryDelay: 20 }).catch(() => undefined);
}

/** Resolves once no entry of the Maildir (its top, new/, cur/, tmp/) changed for quietMs, or after budgetMs. */
async function quiet(root: string, { quietMs, budgetMs }: Settle): Promise<void> {
  const look = async (): Promise<string> => {
    const parts: string[] = [];
    for (const d of [root, join(root, 'new'), join(root, 'cur'), join(root, 'tmp')]) {
      for (const name of await readdir(d).catch(() => [] as string[])) {
        const s = await stat(join(d, name), { bigint: true }).catch(() => null);
        parts.push(`${d}/${name}:${s?.size ?? '-'}:${s?.mtimeNs ?? '-'}`);
      }
    }
    return parts.join('\n');
  };
  const until = performance.now() + budgetMs;
  let last = await look();
  while (performance.now() < until) {
    await new Promise((r) => setTimeout(r, quietMs));
    const now = await look();
    if (now === last) return;
    last = now;
  }
}

/**
 * The granularity of ctime set by rename() on the filesystem holding `dir`: renames 0.1-0.5 ms
 * apart share a ctime until the kernel's coarse clock ticks. Returns the typical step between
 * distinct ctimes, ms (about 4 with HZ=250; near 0 if the filesystem stamps fine-grained times).
 */
export async function ctimeGranularity(dir: string): Promise<number> {
  const d = await mkdtemp(join(dir, 'mailbridge-bench-ctime-'));
  try {
    const times: bigint[] = [];
    for (let i = 0; i < 400; i++) {
      await writeFile(join(d, `t${i}`), 'x');
      await rename(join(d, `t${i}`), join(d, `n${i}`));
      times.push((await stat(join(d, `n${i}`), { bigint: true })).ctimeNs);
    }
    const steps: number[] = [];
    for (let i = 1; i < times.length; i++) {
      const a = times[i] ?? 0n;
      const b = times[i - 1] ?? 0n;
      if (a !== b) steps.push(Number(a - b) / 1e6);
    }
    steps.sort((x, y) => x - y);
    // Distinct ctimes are one tick apart (or more, when the loop was preempted): the median step.
    return steps[Math.floor(steps.length / 2)] ?? 0;
  } finally {
    await rm(d, { recursive: true, force: true });
  }
}
