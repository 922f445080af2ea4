// Delay warnings (DELAY_WARNING_MS): their own table and lease, beside the message's row,
// which a warning never touches (bounce-tasks.ts owes, leases and settles them).
import type { RecipientResult } from '../protocol/wire.ts';
import { M_ROW, toMessage, type MessageRow } from './store.ts';

export class WarningStore {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
  }

  /**
   * A deferred message owes a warning from `dueAt` (once: a row that exists stays, only its
   * pending recipients' last replies are refreshed while it is still owed and not out).
   */
  oweWarning(id: string, dueAt: number, results: RecipientResult[]): void {
    this.#sql.exec(
      `INSERT INTO warnings (message_id, state, due_at, next_attempt_at, results) VALUES (?, 'owed', ?, ?, ?)
       ON CONFLICT (message_id) DO UPDATE SET results = excluded.results
         WHERE warnings.state = 'owed' AND warnings.lease_session IS NULL`,
      id, dueAt, dueAt, JSON.stringify(results),
    );
  }

  /** The oldest warning due now, no connection holding it, whose message is still deferred (not leased). */
  nextWarning(now: number): { message: MessageRow; results: RecipientResult[] } | null {
    const r = this.#sql.exec(
      `SELECT ${M_ROW}, w.results AS warning_results FROM warnings w JOIN messages m ON m.id = w.message_id
       WHERE w.state = 'owed' AND w.lease_session IS NULL AND w.next_attempt_at <= ? AND m.state = 'deferred'
       ORDER BY w.next_attempt_at, w.message_id LIMIT 1`,
      now,
    ).toArray()[0];
    return r ? { message: toMessage(r), results: JSON.parse(String(r.warning_results)) as RecipientResult[] } : null;
  }

  /** A warning goes to one connection; the message itself is not touched. */
  leaseWarning(id: string, session: string): void {
    this.#sql.exec(`UPDATE warnings SET lease_session = ? WHERE message_id = ? AND state = 'owed' AND lease_session IS NULL`, session, id);
  }

  warning(id: string): { state: 'owed' | 'sent' | 'failed'; dueAt: number; leaseSession: string | null; status: string | null } | null {
    const r = this.#sql.exec(`SELECT state, due_at, lease_session, status FROM warnings WHERE message_id = ?`, id).toArray()[0];
    if (!r) return null;
    return {
      state: String(r.state) as 'owed' | 'sent' | 'failed', dueAt: Number(r.due_at),
      leaseSession: r.lease_session === null ? null : String(r.lease_session), status: r.status === null ? null : String(r.status),
    };
  }

  /** What the agent answered: sent / failed for good (never offered again), or again at `nextAttemptAt`. */
  settleWarning(id: string, state: 'sent' | 'failed' | 'owed', status: string, nextAttemptAt: number | null = null): void {
    this.#sql.exec(
      `UPDATE warnings SET state = ?, lease_session = NULL, status = ?, next_attempt_at = COALESCE(?, next_attempt_at)
       WHERE message_id = ? AND state = 'owed'`,
      state, status, nextAttemptAt, id,
    );
  }
}
