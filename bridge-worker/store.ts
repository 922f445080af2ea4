// The message store: every SQL statement the queue runs, with parameters.
// Message bytes live in `chunks`, at most MAX_CHUNK_BYTES a row.
import type { RecipientResult } from '../protocol/wire.ts';
import type { State } from './schema.ts';

export interface MessageRow {
  id: string;
  state: State;
  sender: string;
  recipients: string[];
  results: RecipientResult[];
  size: number;
  sha256: string;
  chunks: number;
  receivedAt: number;
  /** Start of the retry clock: receivedAt, or the time of a dead-letter replay. */
  retryFrom: number;
  attempts: number;
  nextAttemptAt: number | null;
  leaseSession: string | null;
  lastError: string | null;
}

type Row = Record<string, SqlStorageValue>;

function toMessage(r: Row): MessageRow {
  return {
    id: String(r.id),
    state: String(r.state) as State,
    sender: String(r.sender),
    recipients: JSON.parse(String(r.recipients)) as string[],
    results: JSON.parse(String(r.results)) as RecipientResult[],
    size: Number(r.size),
    sha256: String(r.sha256 ?? ''),
    chunks: Number(r.chunks),
    receivedAt: Number(r.received_at),
    retryFrom: Number(r.retry_from ?? r.received_at),
    attempts: Number(r.attempts),
    nextAttemptAt: r.next_attempt_at === null ? null : Number(r.next_attempt_at),
    leaseSession: r.lease_session === null ? null : String(r.lease_session),
    lastError: r.last_error === null ? null : String(r.last_error),
  };
}

export class MessageStore {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
  }

  /** Starts a message in `incoming`: it is not visible to agents until commit(). */
  begin(id: string, sender: string, recipients: string[], now: number): void {
    this.#sql.exec(
      `INSERT INTO messages (id, state, sender, recipients, received_at) VALUES (?, 'incoming', ?, ?, ?)`,
      id, sender, JSON.stringify(recipients), now,
    );
  }

  appendChunk(id: string, seq: number, data: Uint8Array): void {
    this.#sql.exec(`INSERT INTO chunks (message_id, seq, data) VALUES (?, ?, ?)`, id, seq, data);
  }

  /** incoming -> queued, once every chunk is stored. */
  commit(id: string, size: number, sha256: string, chunks: number, dedupeKey: string): void {
    this.#sql.exec(
      `UPDATE messages SET state = 'queued', size = ?, sha256 = ?, chunks = ?, dedupe_key = ?
       WHERE id = ? AND state = 'incoming'`,
      size, sha256, chunks, dedupeKey, id,
    );
  }

  /** Removes a message and its bytes, whatever its state. */
  remove(id: string): void {
    this.#sql.exec(`DELETE FROM chunks WHERE message_id = ?`, id);
    this.#sql.exec(`DELETE FROM messages WHERE id = ?`, id);
  }

  /** The id of an earlier copy of the same message (same key) still queued or acked since `since`. */
  findDuplicate(dedupeKey: string, since: number): string | null {
    const live = this.#sql.exec(
      `SELECT id FROM messages WHERE dedupe_key = ? AND state != 'incoming' LIMIT 1`, dedupeKey,
    ).toArray()[0];
    if (live) return String(live.id);
    const done = this.#sql.exec(
      `SELECT message_id FROM delivered WHERE dedupe_key = ? AND acked_at >= ?`, dedupeKey, since,
    ).toArray()[0];
    return done ? String(done.message_id) : null;
  }

  get(id: string): MessageRow | null {
    const r = this.#sql.exec(`SELECT * FROM messages WHERE id = ?`, id).toArray()[0];
    return r ? toMessage(r) : null;
  }

  /** Messages in one state (or all but incoming), oldest first, for the admin API. */
  list(state: State | null, limit: number): MessageRow[] {
    const rows = state === null
      ? this.#sql.exec(`SELECT * FROM messages WHERE state != 'incoming' ORDER BY received_at, id LIMIT ?`, limit)
      : this.#sql.exec(`SELECT * FROM messages WHERE state = ? ORDER BY received_at, id LIMIT ?`, state, limit);
    return rows.toArray().map(toMessage);
  }

  /** deferred -> queued now, without waiting for the backoff. */
  retryNow(id: string): boolean {
    return this.#sql.exec(
      `UPDATE messages SET state = 'queued', next_attempt_at = NULL WHERE id = ? AND state = 'deferred'`, id,
    ).rowsWritten > 0;
  }

  /** dead-letter -> queued, with a fresh retry clock (another MAX_AGE_MS before dead-letter). */
  replay(id: string, now: number): boolean {
    return this.#sql.exec(
      `UPDATE messages SET state = 'queued', next_attempt_at = NULL, retry_from = ? WHERE id = ? AND state = 'dead-letter'`,
      now, id,
    ).rowsWritten > 0;
  }

  /**
   * Oldest queued message this agent may lease: one without affinity, its own, or one
   * whose affinity to another agent has run out.
   */
  nextQueued(agent: string, now: number): MessageRow | null {
    const r = this.#sql.exec(
      `SELECT * FROM messages WHERE state = 'queued'
         AND (affinity_until IS NULL OR affinity_until <= ? OR agent = ?)
       ORDER BY received_at, id LIMIT 1`,
      now, agent,
    ).toArray()[0];
    return r ? toMessage(r) : null;
  }

  countLeased(session: string): number {
    const r = this.#sql.exec(
      `SELECT COUNT(*) AS n FROM messages WHERE state = 'in-flight' AND lease_session = ?`, session,
    ).one();
    return Number(r.n);
  }

  /** queued -> in-flight, leased to one agent connection; counts the attempt. */
  lease(id: string, session: string, agent: string): void {
    this.#sql.exec(
      `UPDATE messages SET state = 'in-flight', lease_session = ?, agent = ?, affinity_until = NULL,
         attempts = attempts + 1
       WHERE id = ? AND state = 'queued'`,
      session, agent, id,
    );
  }

  chunk(id: string, seq: number): Uint8Array {
    const r = this.#sql.exec(`SELECT data FROM chunks WHERE message_id = ? AND seq = ?`, id, seq).one();
    return new Uint8Array(r.data as ArrayBuffer);
  }

  /** Every in-flight message of a gone connection goes back to queued, kept for its agent until `until`. */
  releaseSession(session: string, until: number): number {
    return this.#sql.exec(
      `UPDATE messages SET state = 'queued', lease_session = NULL, affinity_until = ?
       WHERE state = 'in-flight' AND lease_session = ?`,
      until, session,
    ).rowsWritten;
  }

  /** in-flight leases whose connection no longer exists (after an eviction) go back to queued. */
  releaseAllExcept(sessions: string[], until: number): number {
    const keep = JSON.stringify(sessions);
    return this.#sql.exec(
      `UPDATE messages SET state = 'queued', lease_session = NULL, affinity_until = ?
       WHERE state = 'in-flight' AND lease_session NOT IN (SELECT value FROM json_each(?))`,
      until, keep,
    ).rowsWritten;
  }

  /** Acknowledged to the end: drop the bytes, remember the key for dedupe. */
  finish(id: string, dedupeKey: string | null, now: number): void {
    if (dedupeKey !== null) {
      this.#sql.exec(
        `INSERT OR REPLACE INTO delivered (dedupe_key, message_id, acked_at) VALUES (?, ?, ?)`,
        dedupeKey, id, now,
      );
    }
    this.remove(id);
  }

  dedupeKeyOf(id: string): string | null {
    const r = this.#sql.exec(`SELECT dedupe_key FROM messages WHERE id = ?`, id).toArray()[0];
    return r && r.dedupe_key !== null ? String(r.dedupe_key) : null;
  }

  defer(id: string, pending: string[], results: RecipientResult[], nextAttemptAt: number, error: string): void {
    this.#sql.exec(
      `UPDATE messages SET state = 'deferred', lease_session = NULL, recipients = ?, results = ?,
         next_attempt_at = ?, last_error = ? WHERE id = ?`,
      JSON.stringify(pending), JSON.stringify(results), nextAttemptAt, error, id,
    );
  }

  deadLetter(id: string, pending: string[], results: RecipientResult[], error: string): void {
    this.#sql.exec(
      `UPDATE messages SET state = 'dead-letter', lease_session = NULL, recipients = ?, results = ?,
         next_attempt_at = NULL, last_error = ? WHERE id = ?`,
      JSON.stringify(pending), JSON.stringify(results), error, id,
    );
  }

  /** in-flight -> queued without counting a failure (the agent handed it back). */
  requeue(id: string, error: string): void {
    this.#sql.exec(
      `UPDATE messages SET state = 'queued', lease_session = NULL, last_error = ? WHERE id = ?`, error, id,
    );
  }

  /** Deferred messages whose time has come go back to queued. */
  wakeDeferred(now: number): number {
    return this.#sql.exec(
      `UPDATE messages SET state = 'queued', next_attempt_at = NULL
       WHERE state = 'deferred' AND next_attempt_at <= ?`,
      now,
    ).rowsWritten;
  }

  /** Earliest time something must happen without an outside event, or null. */
  nextDeadline(now: number): number | null {
    const r = this.#sql.exec(
      `SELECT MIN(t) AS t FROM (
         SELECT MIN(next_attempt_at) AS t FROM messages WHERE state = 'deferred'
         UNION ALL
         SELECT MIN(affinity_until) AS t FROM messages WHERE state = 'queued' AND affinity_until > ?)`,
      now,
    ).one();
    return r.t === null ? null : Number(r.t);
  }

  /** Drops dedupe memory older than `before`, and incoming leftovers of crashed ingests. */
  prune(before: number, incomingBefore: number): void {
    this.#sql.exec(`DELETE FROM delivered WHERE acked_at < ?`, before);
    const stale = this.#sql.exec(
      `SELECT id FROM messages WHERE state = 'incoming' AND received_at < ?`, incomingBefore,
    ).toArray();
    for (const r of stale) this.remove(String(r.id));
  }

  counts(): Record<State, number> {
    const out: Record<State, number> = { incoming: 0, queued: 0, 'in-flight': 0, deferred: 0, 'dead-letter': 0 };
    for (const r of this.#sql.exec(`SELECT state, COUNT(*) AS n FROM messages GROUP BY state`)) {
      out[String(r.state) as State] = Number(r.n);
    }
    return out;
  }
}
