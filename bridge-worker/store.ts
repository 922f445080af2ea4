// The message store: every SQL statement the queue runs, with parameters.
// Message bytes live in R2 under `body_key` (the row keeps Cloudflare's block and the
// header section, `head`), or, stored before the BODIES bucket or without one, in
// `chunks`, at most MAX_CHUNK_BYTES a row.
import { isAuthVerdicts, type AuthVerdicts, type FailureReason, type RecipientResult } from '../protocol/wire.ts';
import type { QueueMessage } from '../protocol/queue.ts';
import { SCHEMA_VERSION, STATES, type State } from './schema.ts';
import type { Stored } from '../protocol/admin.ts';

/** A stored message: what the admin API shows, and what only the object needs. */
export interface MessageRow extends QueueMessage {
  /** Leases that ended without an answer since the last settlement. */
  leaseEnds: number;
  /** Cloudflare's verdicts from its block; null for messages stored before they were kept. */
  auth: AuthVerdicts | null;
}

function parseAuth(v: SqlStorageValue | undefined): AuthVerdicts | null {
  if (typeof v !== 'string') return null;
  try {
    const a: unknown = JSON.parse(v);
    return isAuthVerdicts(a) ? a : null;
  } catch {
    return null;
  }
}

type Row = Record<string, SqlStorageValue>;

/** Every column toMessage reads: not `head` (up to 64 KiB a row), which head() reads alone. */
const COLUMNS = [
  'id', 'state', 'sender', 'recipients', 'results', 'size', 'sha256', 'chunks', 'dedupe_key', 'received_at', 'attempts',
  'next_attempt_at', 'lease_session', 'last_error', 'retry_from', 'agent', 'affinity_until', 'lease_ends', 'failure',
  'bounce_status', 'settled_at', 'auth', 'prefix', 'body_key', 'md5',
] as const;
const ROW = COLUMNS.join(', ');
/** The same columns of the messages table under alias `m`, for joins. */
export const M_ROW = COLUMNS.map((c) => `m.${c}`).join(', ');

export function toMessage(r: Row): MessageRow {
  return {
    id: String(r.id),
    state: String(r.state) as State,
    sender: String(r.sender),
    recipients: JSON.parse(String(r.recipients)) as string[],
    results: JSON.parse(String(r.results)) as RecipientResult[],
    size: Number(r.size),
    sha256: String(r.sha256 ?? ''),
    prefix: Number(r.prefix ?? 0),
    chunks: Number(r.chunks),
    bodyKey: r.body_key === null || r.body_key === undefined ? null : String(r.body_key),
    md5: r.md5 === null || r.md5 === undefined ? null : String(r.md5),
    receivedAt: Number(r.received_at),
    retryFrom: Number(r.retry_from ?? r.received_at),
    attempts: Number(r.attempts),
    nextAttemptAt: r.next_attempt_at === null ? null : Number(r.next_attempt_at),
    leaseSession: r.lease_session === null ? null : String(r.lease_session),
    lastError: r.last_error === null ? null : String(r.last_error),
    leaseEnds: Number(r.lease_ends ?? 0),
    failure: r.failure === null || r.failure === undefined ? null : (String(r.failure) as FailureReason),
    bounceStatus: r.bounce_status === null || r.bounce_status === undefined ? null : String(r.bounce_status),
    settledAt: r.settled_at === null || r.settled_at === undefined ? null : Number(r.settled_at),
    auth: parseAuth(r.auth),
  };
}

export class MessageStore {
  readonly #sql: SqlStorage;

  /** The meta table's rows, once read (#metaRows). */
  #meta: Map<string, string> | null = null;

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
  commit(id: string, size: number, sha256: string, prefix: number, chunks: number, dedupeKey: string, auth: AuthVerdicts): void {
    this.#sql.exec(
      `UPDATE messages SET state = 'queued', size = ?, sha256 = ?, prefix = ?, chunks = ?, dedupe_key = ?, auth = ?
       WHERE id = ? AND state = 'incoming'`,
      size, sha256, prefix, chunks, dedupeKey, JSON.stringify(auth), id,
    );
  }

  /**
   * Removes every message still `incoming`. Only at object start: no ingest can be running
   * then, so each is an ingest that died with the previous instance (its sender saw an error).
   */
  removeIncoming(): number {
    const rows = this.#sql.exec(`SELECT id FROM messages WHERE state = 'incoming'`).toArray();
    for (const r of rows) this.remove(String(r.id));
    return rows.length;
  }

  /**
   * A message whose body is already in R2 (`body.key`), queued at once: the row is the only
   * write, so there is no `incoming` step. `body.head`: Cloudflare's block and the header
   * section after it.
   */
  insertStored(
    id: string, sender: string, recipients: string[], now: number,
    body: { key: string; size: number; md5: string; prefix: number; head: Uint8Array }, dedupeKey: string, auth: AuthVerdicts,
  ): void {
    this.#sql.exec(
      `INSERT INTO messages (id, state, sender, recipients, received_at, size, prefix, chunks, body_key, md5, head, dedupe_key, auth)
       VALUES (?, 'queued', ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)`,
      id, sender, JSON.stringify(recipients), now, body.size, body.prefix, body.key, body.md5, body.head, dedupeKey, JSON.stringify(auth),
    );
  }

  /**
   * The message's first bytes, block included: its stored head (R2 messages: the block and
   * the header section) or its first chunk. Empty when it has neither.
   */
  head(id: string): Uint8Array {
    const r = this.#sql.exec(`SELECT head, chunks FROM messages WHERE id = ?`, id).toArray()[0];
    if (!r) return new Uint8Array();
    if (r.head !== null && r.head !== undefined) return new Uint8Array(r.head as ArrayBuffer);
    return Number(r.chunks) > 0 ? this.chunk(id, 0) : new Uint8Array();
  }

  /** An R2 object no message keeps (a duplicate, a refused recipient): to delete. */
  noteBodyDelete(key: string): void {
    this.#sql.exec(`INSERT OR IGNORE INTO body_deletes (key) VALUES (?)`, key);
  }

  /** Of these R2 keys, those no message row owns (the orphan sweep's candidates). */
  unowned(keys: string[]): string[] {
    if (keys.length === 0) return [];
    return this.#sql.exec(
      `SELECT value AS key FROM json_each(?) WHERE NOT EXISTS (SELECT 1 FROM messages WHERE body_key = value)`,
      JSON.stringify(keys),
    ).toArray().map((r) => String(r.key));
  }

  /** R2 objects of removed messages not yet deleted, at most `limit`. */
  bodyDeletes(limit: number): string[] {
    return this.#sql.exec(`SELECT key FROM body_deletes LIMIT ?`, limit).toArray().map((r) => String(r.key));
  }

  /** R2 confirmed these deletes. */
  bodiesDeleted(keys: string[]): void {
    this.#sql.exec(`DELETE FROM body_deletes WHERE key IN (SELECT value FROM json_each(?))`, JSON.stringify(keys));
  }

  /** Removes a message and its bytes, whatever its state; an R2 body is noted for deletion. */
  remove(id: string): void {
    this.#sql.exec(
      `INSERT OR IGNORE INTO body_deletes (key) SELECT body_key FROM messages WHERE id = ? AND body_key IS NOT NULL`, id,
    );
    this.#sql.exec(`DELETE FROM chunks WHERE message_id = ?`, id);
    this.#sql.exec(`DELETE FROM messages WHERE id = ?`, id);
  }

  /**
   * The id of an earlier copy of the same message (same key) still owed (queued, in-flight,
   * deferred, hold) or acked since `since`. A copy that bounced or went to dead-letter is not
   * one: its sender's resend is a new message.
   */
  findDuplicate(dedupeKey: string, since: number): string | null {
    // One statement for both places (each statement a fresh object prepares costs it CPU).
    const r = this.#sql.exec(
      `SELECT COALESCE(
         (SELECT id FROM messages WHERE dedupe_key = ?1 AND state IN ('queued', 'in-flight', 'deferred', 'hold') LIMIT 1),
         (SELECT message_id FROM delivered WHERE dedupe_key = ?1 AND acked_at >= ?2 LIMIT 1)) AS id`,
      dedupeKey, since,
    ).one();
    return r.id === null ? null : String(r.id);
  }

  get(id: string): MessageRow | null {
    const r = this.#sql.exec(`SELECT ${ROW} FROM messages WHERE id = ?`, id).toArray()[0];
    return r ? toMessage(r) : null;
  }

  /** Messages in one state (or all but incoming), oldest first, for the admin API. */
  list(state: State | null, limit: number): MessageRow[] {
    const rows = state === null
      ? this.#sql.exec(`SELECT ${ROW} FROM messages WHERE state != 'incoming' ORDER BY received_at, id LIMIT ?`, limit)
      : this.#sql.exec(`SELECT ${ROW} FROM messages WHERE state = ? ORDER BY received_at, id LIMIT ?`, state, limit);
    return rows.toArray().map(toMessage);
  }

  /** deferred -> queued now, without waiting for the backoff. */
  retryNow(id: string): boolean {
    return this.#sql.exec(
      `UPDATE messages SET state = 'queued', next_attempt_at = NULL WHERE id = ? AND state = 'deferred'`, id,
    ).rowsWritten > 0;
  }

  /**
   * dead-letter -> queued under a new id `as`, with a fresh retry clock (another MAX_AGE_MS
   * before it fails again) and `recipients` the ones still owed, `results` the delivered ones'
   * (owedOnReplay). A new id because the agent's journal answers a known id from its past
   * answers (a refusal included): the replay must reach the target afresh. Its bytes stay where
   * they are (body_key, or its chunks renamed with it); its delay warning, if any, is forgotten.
   */
  replay(id: string, as: string, now: number, recipients: string[], results: RecipientResult[]): boolean {
    const done = this.#sql.exec(
      `UPDATE messages SET id = ?, state = 'queued', next_attempt_at = NULL, retry_from = ?, lease_ends = 0, recipients = ?, results = ?,
         failure = NULL, bounce_status = NULL, settled_at = NULL, agent = NULL, affinity_until = NULL WHERE id = ? AND state = 'dead-letter'`,
      as, now, JSON.stringify(recipients), JSON.stringify(results), id,
    ).rowsWritten > 0;
    if (!done) return false;
    this.#sql.exec(`UPDATE chunks SET message_id = ? WHERE message_id = ?`, as, id);
    this.#sql.exec(`DELETE FROM warnings WHERE message_id = ?`, id);
    return true;
  }

  /** queued or deferred -> hold (postsuper -h): nothing leases, retries or expires it until released. */
  hold(id: string): boolean {
    return this.#sql.exec(
      `UPDATE messages SET state = 'hold', next_attempt_at = NULL, affinity_until = NULL WHERE id = ? AND state IN ('queued', 'deferred')`, id,
    ).rowsWritten > 0;
  }

  /** hold -> queued (postsuper -H): offered to the next agent at once. */
  release(id: string): boolean {
    return this.#sql.exec(`UPDATE messages SET state = 'queued', next_attempt_at = NULL WHERE id = ? AND state = 'hold'`, id).rowsWritten > 0;
  }

  meta(key: string): string | null {
    return this.#metaRows().get(key) ?? null;
  }

  setMeta(key: string, value: string): void {
    this.#sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)`, key, value);
    this.#metaRows().set(key, value);
  }

  deleteMeta(key: string): void {
    this.#sql.exec(`DELETE FROM meta WHERE key = ?`, key);
    this.#meta?.delete(key);
  }

  /** The meta table, read once per object: the object is its storage's only writer. */
  #metaRows(): Map<string, string> {
    if (this.#meta === null) {
      this.#meta = new Map();
      for (const r of this.#sql.exec(`SELECT key, value FROM meta`)) this.#meta.set(String(r.key), String(r.value));
    }
    return this.#meta;
  }

  /**
   * What a starting object has to do: 'migrate' (a new object, or a schema older than this
   * code), 'recover' (an ingest that never committed, or leases whose connections may be gone),
   * or nothing. Most starts are wake-ups with nothing to do; they read the meta table (kept for
   * meta()) and run one more statement, since a fresh object pays for each statement it prepares.
   */
  startState(): 'migrate' | 'recover' | 'clean' {
    try {
      if (Number(this.meta('schema_version') ?? 0) !== SCHEMA_VERSION) return this.#forgetMeta('migrate');
    } catch {
      return this.#forgetMeta('migrate');  // no meta table yet
    }
    const r = this.#sql.exec(
      `SELECT EXISTS (SELECT 1 FROM messages WHERE state = 'incoming')
           OR EXISTS (SELECT 1 FROM messages WHERE state IN ('in-flight', 'bouncing') AND lease_session IS NOT NULL)
           OR EXISTS (SELECT 1 FROM warnings WHERE lease_session IS NOT NULL) AS recover`,
    ).one();
    return r.recover ? 'recover' : 'clean';
  }

  /** Migrations write meta behind the cache's back: read it again after them. */
  #forgetMeta<T>(v: T): T {
    this.#meta = null;
    return v;
  }

  /**
   * Oldest queued message this agent may lease: one without affinity, its own, or one
   * whose affinity to another agent has run out.
   */
  /**
   * `prefixes`: the agent checks sha256 after a prefix (protocol v2); else only messages without one.
   * `fetches`: the agent fetches R2 bodies (hello `fetch`); else only messages in chunks.
   */
  nextQueued(agent: string, now: number, prefixes = true, fetches = false): MessageRow | null {
    const r = this.#sql.exec(
      `SELECT ${ROW} FROM messages WHERE state = 'queued'
         AND (affinity_until IS NULL OR affinity_until <= ? OR agent = ?)
         AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
         AND (? OR prefix = 0)
         AND (? OR body_key IS NULL)
       ORDER BY received_at, id LIMIT 1`,
      now, agent, now, prefixes ? 1 : 0, fetches ? 1 : 0,
    ).toArray()[0];
    return r ? toMessage(r) : null;
  }

  /**
   * The oldest bounce task no connection holds and whose time has come. Not while the
   * message's delay warning is out: the agent's `bounced` answer names only the id.
   */
  nextBounce(now: number): MessageRow | null {
    const r = this.#sql.exec(
      // In bounce order by its own index (schema 11); the planner would rather sort every bouncing row.
      `SELECT ${ROW} FROM messages INDEXED BY messages_by_bounce_order WHERE state = 'bouncing' AND lease_session IS NULL
         AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
         AND NOT EXISTS (SELECT 1 FROM warnings w WHERE w.message_id = messages.id AND w.lease_session IS NOT NULL)
       ORDER BY settled_at, id LIMIT 1`,
      now,
    ).toArray()[0];
    return r ? toMessage(r) : null;
  }

  /** Messages, bounce tasks and delay warnings this connection holds: all count against its window. */
  countLeased(session: string): number {
    const r = this.#sql.exec(
      `SELECT (SELECT COUNT(*) FROM messages WHERE lease_session = ?) + (SELECT COUNT(*) FROM warnings WHERE lease_session = ?) AS n`,
      session, session,
    ).one();
    return Number(r.n);
  }

  /** A bounce task goes to one connection; it stays bouncing until the agent answers. */
  leaseBounce(id: string, session: string): void {
    this.#sql.exec(`UPDATE messages SET lease_session = ? WHERE id = ? AND state = 'bouncing'`, session, id);
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

  /**
   * Every lease of a gone connection ends: in-flight messages go back to queued, kept for
   * their agent until `until` and not offered again before `notBefore(leaseEnds)` (a message
   * that keeps ending its connection is spaced out, not redelivered in a tight loop); bounce
   * tasks are offered again. Returns the released messages, lease_ends counted.
   */
  releaseSession(session: string, until: number, notBefore: (leaseEnds: number) => number): MessageRow[] {
    return this.#release(`lease_session = ?`, [session], until, notBefore);
  }

  /** Leases whose connection no longer exists (after an eviction) end the same way. */
  releaseAllExcept(sessions: string[], until: number, notBefore: (leaseEnds: number) => number): MessageRow[] {
    return this.#release(`lease_session NOT IN (SELECT value FROM json_each(?))`, [JSON.stringify(sessions)], until, notBefore);
  }

  #release(where: string, args: SqlStorageValue[], until: number, notBefore: (leaseEnds: number) => number): MessageRow[] {
    this.#sql.exec(`UPDATE messages SET lease_session = NULL WHERE state = 'bouncing' AND lease_session IS NOT NULL AND ${where}`, ...args);
    this.#sql.exec(`UPDATE warnings SET lease_session = NULL WHERE lease_session IS NOT NULL AND ${where}`, ...args);
    const rows = this.#sql.exec(`SELECT ${ROW} FROM messages WHERE state = 'in-flight' AND ${where}`, ...args).toArray().map(toMessage);
    for (const m of rows) {
      m.leaseEnds++;
      const at = notBefore(m.leaseEnds);
      this.#sql.exec(
        `UPDATE messages SET state = 'queued', lease_session = NULL, affinity_until = ?, lease_ends = ?, next_attempt_at = ?
         WHERE id = ? AND state = 'in-flight'`,
        until, m.leaseEnds, at > 0 ? at : null, m.id,
      );
      m.state = 'queued';
      m.leaseSession = null;
    }
    return rows;
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
         next_attempt_at = ?, last_error = ?, lease_ends = 0 WHERE id = ?`,
      JSON.stringify(pending), JSON.stringify(results), nextAttemptAt, error, id,
    );
  }

  /**
   * Failed for good: `bouncing` (a DSN to the sender is owed) or `dead-letter` (the operator's;
   * `bounceStatus` says why no bounce). `results` are every final result, `pending` the
   * recipients that never got one. Keeps the bytes: the DSN quotes the header, relayctl exports it.
   */
  fail(
    id: string, state: 'bouncing' | 'dead-letter', failure: FailureReason, pending: string[], results: RecipientResult[],
    error: string, bounceStatus: string | null, now: number,
  ): void {
    this.#sql.exec(
      `UPDATE messages SET state = ?, lease_session = NULL, recipients = ?, results = ?, next_attempt_at = NULL,
         last_error = ?, failure = ?, bounce_status = ?, settled_at = ?, lease_ends = 0 WHERE id = ?`,
      state, JSON.stringify(pending), JSON.stringify(results), error, failure, bounceStatus, now, id,
    );
  }

  /** A bouncing message's pending recipients and results, updated (some found delivered after all). */
  setResults(id: string, pending: string[], results: RecipientResult[]): void {
    this.#sql.exec(
      `UPDATE messages SET recipients = ?, results = ? WHERE id = ? AND state = 'bouncing'`,
      JSON.stringify(pending), JSON.stringify(results), id,
    );
  }

  /** The bounce relay took the DSN: bounced, kept for the retention period. */
  bounced(id: string, status: string, now: number): boolean {
    return this.#sql.exec(
      `UPDATE messages SET state = 'bounced', lease_session = NULL, next_attempt_at = NULL, bounce_status = ?, settled_at = ?
       WHERE id = ? AND state = 'bouncing'`,
      status, now, id,
    ).rowsWritten > 0;
  }

  /** The bounce could not be sent now: offered again at `nextAttemptAt`. */
  bounceLater(id: string, status: string, nextAttemptAt: number): void {
    this.#sql.exec(
      `UPDATE messages SET lease_session = NULL, next_attempt_at = ?, bounce_status = ? WHERE id = ? AND state = 'bouncing'`,
      nextAttemptAt, status, id,
    );
  }

  /** A bounce no agent can send: the message goes to the operator. */
  bounceFailed(id: string, status: string): void {
    this.#sql.exec(
      `UPDATE messages SET state = 'dead-letter', lease_session = NULL, next_attempt_at = NULL, bounce_status = ?
       WHERE id = ? AND state = 'bouncing'`,
      status, id,
    );
  }

  /** Bounce tasks no connection holds (to move them to dead-letter when no agent can bounce). */
  idleBounces(): string[] {
    return this.#sql.exec(`SELECT id FROM messages WHERE state = 'bouncing' AND lease_session IS NULL`).toArray().map((r) => String(r.id));
  }

  /** Every deferred message is due now (the agent saw its target come back). */
  wakeAllDeferred(): number {
    // RETURNING counts messages: rowsWritten would count index entries too.
    return this.#sql.exec(`UPDATE messages SET state = 'queued', next_attempt_at = NULL WHERE state = 'deferred' RETURNING id`).toArray().length;
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
       WHERE state = 'deferred' AND next_attempt_at <= ? RETURNING id`,
      now,
    ).toArray().length;
  }

  /**
   * Earliest time something must happen without an outside event, or null. `expireAfterMs`: a
   * queued or deferred message expires that long after the start of its retry clock.
   */
  nextDeadline(now: number, expireAfterMs: number): number | null {
    // One MIN per state, each a seek in its index (schemas 11, 12): an IN over states walks them
    // all. Scalar subqueries, not a UNION: Cloudflare's SQLite allows few terms in a compound
    // SELECT. INDEXED BY where a partial index would lose to messages_by_state without statistics.
    const r = this.#sql.exec(
      `SELECT MIN(value) AS t FROM json_each(json_array(
         (SELECT MIN(next_attempt_at) FROM messages WHERE state = 'deferred' AND next_attempt_at IS NOT NULL),
         (SELECT MIN(COALESCE(retry_from, received_at)) + ?1 FROM messages INDEXED BY messages_queued_by_retry_clock WHERE state = 'queued'),
         (SELECT MIN(COALESCE(retry_from, received_at)) + ?1 FROM messages INDEXED BY messages_deferred_by_retry_clock WHERE state = 'deferred'),
         (SELECT MIN(affinity_until) FROM messages INDEXED BY messages_by_affinity WHERE state = 'queued' AND affinity_until > ?2),
         (SELECT MIN(next_attempt_at) FROM messages WHERE state = 'queued' AND next_attempt_at > ?2),
         (SELECT MIN(next_attempt_at) FROM messages WHERE state = 'bouncing' AND next_attempt_at > ?2),
         (SELECT MIN(w.next_attempt_at) FROM warnings w JOIN messages m ON m.id = w.message_id
           WHERE w.state = 'owed' AND w.lease_session IS NULL AND m.state = 'deferred' AND w.next_attempt_at > ?2)))`,
      expireAfterMs, now,
    ).one();
    return r.t === null ? null : Number(r.t);
  }

  /** Queued and deferred messages whose retry clock started at or before `since` (not leased, not held). */
  owedSince(since: number): MessageRow[] {
    return this.#sql.exec(
      `SELECT ${ROW} FROM messages INDEXED BY messages_queued_by_retry_clock WHERE state = 'queued' AND COALESCE(retry_from, received_at) <= ?1
       UNION ALL
       SELECT ${ROW} FROM messages INDEXED BY messages_deferred_by_retry_clock WHERE state = 'deferred' AND COALESCE(retry_from, received_at) <= ?1`, since,
    ).toArray().map(toMessage);
  }

  /**
   * Forgets dedupe keys acked before `before`. It reads every key kept (a day's mail: the table is
   * keyed by dedupe_key, and an index on the time would be one more row written per message), so
   * the alarm runs it hourly; findDuplicate never matches a key past its window meanwhile.
   */
  pruneDedupe(before: number): void {
    this.#sql.exec(`DELETE FROM delivered WHERE acked_at < ?`, before);
  }

  /**
   * Drops incoming leftovers of crashed ingests, bounced messages kept since before
   * `bouncedBefore` (their senders have the DSN), and the strays of messages gone.
   */
  prune(incomingBefore: number, bouncedBefore: number): void {
    const stale = this.#sql.exec(
      // INDEXED BY: workerd's SQLite has no statistics (no ANALYZE) and would walk the state.
      `SELECT id FROM messages INDEXED BY messages_by_state WHERE state = 'incoming' AND received_at < ?
       UNION ALL
       SELECT id FROM messages INDEXED BY messages_by_retention WHERE state = 'bounced' AND settled_at < ?`,
      incomingBefore, bouncedBefore,
    ).toArray();
    for (const r of stale) this.remove(String(r.id));
    this.#sql.exec(`DELETE FROM warnings WHERE message_id NOT IN (SELECT id FROM messages)`);
    // Parts whose connection went with an evicted object (no close handler ran).
    this.#sql.exec(`DELETE FROM recipient_staging WHERE received_at < ?`, incomingBefore);
  }

  /** receivedAt of the oldest message in each state (null: none), incoming left out: not yet stored. */
  oldestByState(): Record<State, number | null> {
    const out = Object.fromEntries(STATES.map((s) => [s, null])) as Record<State, number | null>;
    for (const r of this.#sql.exec(`SELECT state, MIN(received_at) AS oldest FROM messages WHERE state != 'incoming' GROUP BY state`)) {
      out[String(r.state) as State] = Number(r.oldest);
    }
    return out;
  }

  /** receivedAt of the oldest message still owed: waiting, in flight, held, or owing its bounce (null: none). */
  oldestOwed(): number | null {
    const r = this.#sql.exec(
      `SELECT MIN(received_at) AS t FROM messages WHERE state IN ('queued', 'in-flight', 'deferred', 'hold', 'bouncing')`,
    ).one();
    return r.t === null ? null : Number(r.t);
  }

  /** Messages and their stored bytes by state (R2's share apart); storage.ts says why. */
  stored(): Record<State, Stored> {
    const out = Object.fromEntries(STATES.map((s) => [s, { bodies: 0, bytes: 0, r2Bytes: 0 }])) as Record<State, Stored>;
    for (const r of this.#sql.exec(
      `SELECT state, COUNT(*) AS n, SUM(size) AS bytes, SUM(CASE WHEN body_key IS NOT NULL THEN size - prefix ELSE 0 END) AS r2
       FROM messages GROUP BY state`,
    )) {
      out[String(r.state) as State] = { bodies: Number(r.n), bytes: Number(r.bytes ?? 0), r2Bytes: Number(r.r2 ?? 0) };
    }
    return out;
  }

  counts(): Record<State, number> {
    const out = Object.fromEntries(STATES.map((s) => [s, 0])) as Record<State, number>;
    for (const r of this.#sql.exec(`SELECT state, COUNT(*) AS n FROM messages GROUP BY state`)) {
      out[String(r.state) as State] = Number(r.n);
    }
    return out;
  }
}
