// The delivery journal: for each message id and recipient, the final answer
// Dovecot gave. Durable (SQLite WAL, synchronous=FULL) before the ack goes out, so
// a message redelivered after a crash or a lost ack is answered from here instead
// of being delivered twice. Temporary failures are not journaled: those
// recipients must be tried again.
//
// Group commit: add() queues entries and a flush at setImmediate writes everything
// queued in one transaction, one fsync. Replies that arrive in the same event-loop
// turn share it, and while a commit blocks the loop new replies pile up for the
// next one, so the fsyncs per second stay bounded however many deliveries run. A
// queued entry is already visible to lookup(); the caller acks only after add()'s
// promise resolves.
//
// Bounces (bounce.ts) are journaled the same way, in their own table: a DSN the relay took
// is recorded before the object hears `bounced sent`, so a redelivered bounce task is
// answered from here instead of mailing the sender a second DSN. Delay warnings (reason
// `delayed`) are kept apart, in `warnings`: a message may get a warning and later its bounce,
// each once, so the journal is keyed by id and kind.
//
// Unsettled recipients (only with the doveadm check on, deliver.ts): just before a body goes
// out, its recipients are marked, committed before the first byte; a recipient's final
// result (committed with it) or a reply saying it was not stored (unmark) clears the mark.
// A mark still there at the next attempt means the last one's outcome is unknown: the body
// went out and no reply was read (connection lost, agent killed). doveadm.ts then asks Dovecot.
//
// Entries are pruned after the retention window. It must be longer than the
// time the queue object may still redeliver a message (its MAX_AGE_MS, 5 days
// by default): a redelivery of a forgotten id would be stored a second time.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import type { RecipientResult } from '../../protocol/wire.ts';

export const DAY_MS = 24 * 60 * 60_000;
export const JOURNAL_RETENTION_MS = 7 * DAY_MS;

/** The bounce relay's reply to a DSN it took. */
export interface BounceSent { code: number; text: string }
/** Which DSN of a message: its bounce (failed for good) or its delay warning. */
export type DsnKind = 'bounce' | 'warning';

/** A mark set (at: when) or cleared (at: null). */
interface Mark { kind: 'mark'; id: string; recipient: string; at: number | null }
type Entry =
  | { kind: 'result'; id: string; result: RecipientResult; at: number }
  | { kind: DsnKind; id: string; sent: BounceSent; at: number }
  | Mark;
interface Batch { entries: Entry[]; done: Promise<void>; settle(err: Error | null): void }

const key = (id: string, recipient: string): string => `${id}\0${recipient}`;

function newBatch(): Batch {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const done = new Promise<void>((res, rej) => { resolve = res; reject = rej; });
  // A batch nobody awaits (e.g. all its adders gave up) must not crash the process.
  done.catch(() => undefined);
  return { entries: [], done, settle: (err) => (err ? reject(err) : resolve()) };
}

export class Journal {
  readonly #db: DatabaseSync;
  readonly #get: StatementSync;
  readonly #put: StatementSync;
  readonly #getDsn: Record<DsnKind, StatementSync>;
  readonly #putDsn: Record<DsnKind, StatementSync>;
  readonly #getMark: StatementSync;
  readonly #putMark: StatementSync;
  readonly #dropMark: StatementSync;
  readonly retentionMs: number;
  /** Queued, not yet committed; lookup() answers from here first. */
  readonly #queued = new Map<string, RecipientResult>();
  readonly #queuedDsns: Record<DsnKind, Map<string, BounceSent>> = { bounce: new Map(), warning: new Map() };
  readonly #queuedMarks = new Map<string, Mark>();
  #batch: Batch | null = null;
  #closed = false;
  /** Transactions committed so far (tests and metrics: how well commits are grouped). */
  commits = 0;

  constructor(stateDir: string, retentionMs = JOURNAL_RETENTION_MS) {
    this.retentionMs = retentionMs;
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    this.#db = new DatabaseSync(join(stateDir, 'journal.sqlite'));
    this.#db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
      CREATE TABLE IF NOT EXISTS results (
        id TEXT NOT NULL, recipient TEXT NOT NULL, result TEXT NOT NULL, at INTEGER NOT NULL,
        PRIMARY KEY (id, recipient));
      CREATE TABLE IF NOT EXISTS bounces (id TEXT PRIMARY KEY, reply TEXT NOT NULL, at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS warnings (id TEXT PRIMARY KEY, reply TEXT NOT NULL, at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS unsettled (
        id TEXT NOT NULL, recipient TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (id, recipient))`);
    this.#get = this.#db.prepare('SELECT result FROM results WHERE id = ? AND recipient = ?');
    this.#put = this.#db.prepare('INSERT OR REPLACE INTO results (id, recipient, result, at) VALUES (?, ?, ?, ?)');
    this.#getDsn = {
      bounce: this.#db.prepare('SELECT reply FROM bounces WHERE id = ?'),
      warning: this.#db.prepare('SELECT reply FROM warnings WHERE id = ?'),
    };
    this.#putDsn = {
      bounce: this.#db.prepare('INSERT OR REPLACE INTO bounces (id, reply, at) VALUES (?, ?, ?)'),
      warning: this.#db.prepare('INSERT OR REPLACE INTO warnings (id, reply, at) VALUES (?, ?, ?)'),
    };
    this.#getMark = this.#db.prepare('SELECT at FROM unsettled WHERE id = ? AND recipient = ?');
    this.#putMark = this.#db.prepare('INSERT OR REPLACE INTO unsettled (id, recipient, at) VALUES (?, ?, ?)');
    this.#dropMark = this.#db.prepare('DELETE FROM unsettled WHERE id = ? AND recipient = ?');
  }

  /** Final results already known (committed or queued) for these recipients of message `id`. */
  lookup(id: string, recipients: string[]): Map<string, RecipientResult> {
    const out = new Map<string, RecipientResult>();
    for (const r of recipients) {
      const queued = this.#queued.get(key(id, r));
      if (queued) {
        out.set(r, queued);
        continue;
      }
      const row = this.#get.get(id, r);
      if (row) out.set(r, JSON.parse(String(row.result)) as RecipientResult);
    }
    return out;
  }

  /**
   * Queues the final results of `id` (temporary failures are skipped). Resolves once they
   * are committed to disk; rejects if that commit failed (they are then not journaled).
   */
  add(id: string, results: readonly RecipientResult[], now = Date.now()): Promise<void> {
    const final = results.filter((r) => r.outcome !== 'tempfail');
    if (final.length === 0) return Promise.resolve();
    if (this.#closed) return Promise.reject(new Error('journal closed'));
    const batch = this.#open();
    for (const result of final) {
      batch.entries.push({ kind: 'result', id, result, at: now });
      this.#queued.set(key(id, result.recipient), result);
    }
    return batch.done;
  }

  /**
   * Marks these recipients of `id` unsettled: their body is about to go out. Resolves once
   * committed (group commit, as add()); the caller sends no byte of the body before that.
   */
  mark(id: string, recipients: readonly string[], now = Date.now()): Promise<void> {
    return this.#marks(id, recipients, now);
  }

  /** Clears the marks of these recipients of `id`: the target said it did not store it for them. */
  unmark(id: string, recipients: readonly string[]): Promise<void> {
    return this.#marks(id, recipients, null);
  }

  /** The recipients of `id` marked unsettled (committed or queued), with when they were marked. */
  unsettled(id: string, recipients: readonly string[]): Map<string, number> {
    const out = new Map<string, number>();
    for (const r of recipients) {
      const queued = this.#queuedMarks.get(key(id, r));
      const at = queued ? queued.at : this.#getMark.get(id, r)?.at;
      if (typeof at === 'number') out.set(r, at);
    }
    return out;
  }

  #marks(id: string, recipients: readonly string[], at: number | null): Promise<void> {
    if (recipients.length === 0) return Promise.resolve();
    if (this.#closed) return Promise.reject(new Error('journal closed'));
    const batch = this.#open();
    for (const recipient of recipients) {
      const m: Mark = { kind: 'mark', id, recipient, at };
      batch.entries.push(m);
      this.#queuedMarks.set(key(id, recipient), m);
    }
    return batch.done;
  }

  /** The relay's reply when the DSN (of this kind) of message `id` was sent (committed or queued), else null. */
  bounceSent(id: string, kind: DsnKind = 'bounce'): BounceSent | null {
    const queued = this.#queuedDsns[kind].get(id);
    if (queued) return queued;
    const row = this.#getDsn[kind].get(id);
    return row ? (JSON.parse(String(row.reply)) as BounceSent) : null;
  }

  /** Records that the DSN (of this kind) of message `id` was sent; resolves once committed (group commit, as add()). */
  addBounce(id: string, sent: BounceSent, now = Date.now(), kind: DsnKind = 'bounce'): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('journal closed'));
    const batch = this.#open();
    batch.entries.push({ kind, id, sent, at: now });
    this.#queuedDsns[kind].set(id, sent);
    return batch.done;
  }

  /** The batch the next flush commits, flushed at the next setImmediate. */
  #open(): Batch {
    if (!this.#batch) {
      this.#batch = newBatch();
      setImmediate(() => this.#flush());
    }
    return this.#batch;
  }

  #flush(): void {
    const batch = this.#batch;
    this.#batch = null;
    if (!batch) return;
    let error: Error | null = null;
    try {
      this.#db.exec('BEGIN');
      try {
        for (const e of batch.entries) {
          if (e.kind === 'result') {
            this.#put.run(e.id, e.result.recipient, JSON.stringify(e.result), e.at);
            // Its outcome is known now: no mark left behind (a no-op unless the doveadm check is on).
            this.#dropMark.run(e.id, e.result.recipient);
          } else if (e.kind === 'mark') {
            if (e.at === null) this.#dropMark.run(e.id, e.recipient);
            else this.#putMark.run(e.id, e.recipient, e.at);
          } else this.#putDsn[e.kind].run(e.id, JSON.stringify(e.sent), e.at);
        }
        this.#db.exec('COMMIT');
        this.commits++;
      } catch (err) {
        this.#db.exec('ROLLBACK');
        throw err;
      }
    } catch (err) {
      error = err instanceof Error ? err : new Error(String(err));
    }
    for (const e of batch.entries) {
      if (e.kind === 'mark') {
        const k = key(e.id, e.recipient);
        if (this.#queuedMarks.get(k) === e) this.#queuedMarks.delete(k);
        continue;
      }
      if (e.kind !== 'result') {
        const queued = this.#queuedDsns[e.kind];
        if (queued.get(e.id) === e.sent) queued.delete(e.id);
        continue;
      }
      const k = key(e.id, e.result.recipient);
      // A later add() of the same recipient may have replaced it meanwhile: keep that one.
      if (this.#queued.get(k) === e.result) this.#queued.delete(k);
    }
    batch.settle(error);
  }

  /** Forgets entries older than the retention window; returns how many. */
  prune(now = Date.now()): number {
    const before = now - this.retentionMs;
    const results = Number(this.#db.prepare('DELETE FROM results WHERE at < ?').run(before).changes);
    return results + Number(this.#db.prepare('DELETE FROM bounces WHERE at < ?').run(before).changes) +
      Number(this.#db.prepare('DELETE FROM warnings WHERE at < ?').run(before).changes) +
      Number(this.#db.prepare('DELETE FROM unsettled WHERE at < ?').run(before).changes);
  }

  size(): number {
    return Number(this.#db.prepare('SELECT COUNT(*) AS n FROM results').get()?.n ?? 0);
  }

  /** Commits what is still queued (its promises settle as usual), then closes. */
  close(): void {
    this.#closed = true;
    this.#flush();
    this.#db.close();
  }
}
