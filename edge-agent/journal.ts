// The delivery journal: for each message id and recipient, the final answer
// Dovecot gave. Written (synchronously, SQLite WAL, synchronous=FULL) before
// the ack goes out, so a message redelivered after a crash or a lost ack is
// answered from here instead of being delivered twice. Temporary failures are
// not journaled: those recipients must be tried again.
//
// Entries are pruned after the retention window. It must be longer than the
// time the queue object may still redeliver a message (its MAX_AGE_MS, 5 days
// by default): a redelivery of a forgotten id would be stored a second time.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { RecipientResult } from '../protocol/wire.ts';

export const DAY_MS = 24 * 60 * 60_000;
export const JOURNAL_RETENTION_MS = 7 * DAY_MS;

export class Journal {
  readonly #db: DatabaseSync;
  readonly retentionMs: number;

  constructor(stateDir: string, retentionMs = JOURNAL_RETENTION_MS) {
    this.retentionMs = retentionMs;
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    this.#db = new DatabaseSync(join(stateDir, 'journal.sqlite'));
    this.#db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
      CREATE TABLE IF NOT EXISTS results (
        id TEXT NOT NULL, recipient TEXT NOT NULL, result TEXT NOT NULL, at INTEGER NOT NULL,
        PRIMARY KEY (id, recipient))`);
  }

  /** Final results already known for these recipients of message `id`. */
  lookup(id: string, recipients: string[]): Map<string, RecipientResult> {
    const out = new Map<string, RecipientResult>();
    const q = this.#db.prepare('SELECT result FROM results WHERE id = ? AND recipient = ?');
    for (const r of recipients) {
      const row = q.get(id, r);
      if (row) out.set(r, JSON.parse(String(row.result)) as RecipientResult);
    }
    return out;
  }

  record(id: string, results: RecipientResult[], now = Date.now()): void {
    const q = this.#db.prepare('INSERT OR REPLACE INTO results (id, recipient, result, at) VALUES (?, ?, ?, ?)');
    this.#db.exec('BEGIN');
    try {
      for (const r of results) if (r.outcome !== 'tempfail') q.run(id, r.recipient, JSON.stringify(r), now);
      this.#db.exec('COMMIT');
    } catch (err) {
      this.#db.exec('ROLLBACK');
      throw err;
    }
  }

  /** Forgets entries older than the retention window; returns how many. */
  prune(now = Date.now()): number {
    return Number(this.#db.prepare('DELETE FROM results WHERE at < ?').run(now - this.retentionMs).changes);
  }

  size(): number {
    return Number(this.#db.prepare('SELECT COUNT(*) AS n FROM results').get()?.n ?? 0);
  }

  close(): void {
    this.#db.close();
  }
}
