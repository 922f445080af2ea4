// The queue's SQLite schema. Each migration runs once, in order; the applied
// version is kept in `meta` so a redeployed object upgrades its own storage.

import { STATES, type State } from '../protocol/queue.ts';

export { STATES, type State };

const check = (states: readonly string[]): string => states.map((s) => `'${s}'`).join(', ');
// Each migration's text is fixed once written: the CHECK of each rebuild names the states of its day.
const FIRST_STATES = ['incoming', 'queued', 'in-flight', 'deferred', 'dead-letter'];
const STATES_V4 = ['incoming', 'queued', 'in-flight', 'deferred', 'bouncing', 'bounced', 'dead-letter'];
const STATES_V7 = ['incoming', 'queued', 'in-flight', 'deferred', 'hold', 'bouncing', 'bounced', 'dead-letter'];
// A state added to protocol/queue.ts needs a migration that rebuilds the CHECK: fail at once, not at the first write.
if (STATES.join() !== STATES_V7.join()) throw new Error('protocol/queue.ts STATES changed: add a migration that rebuilds the CHECK');

const MIGRATIONS: readonly string[] = [
  // 1: messages, their chunks, and the dedupe memory of acknowledged messages.
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE messages (
     id TEXT PRIMARY KEY,
     state TEXT NOT NULL CHECK (state IN (${check(FIRST_STATES)})),
     sender TEXT NOT NULL,
     recipients TEXT NOT NULL,          -- JSON array of recipients still pending
     results TEXT NOT NULL DEFAULT '[]',-- JSON array of final RecipientResults so far
     size INTEGER NOT NULL DEFAULT 0,
     sha256 TEXT,
     chunks INTEGER NOT NULL DEFAULT 0,
     dedupe_key TEXT,
     received_at INTEGER NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     next_attempt_at INTEGER,
     lease_session TEXT,
     last_error TEXT
   );
   CREATE INDEX messages_by_state ON messages (state, received_at);
   CREATE INDEX messages_by_dedupe ON messages (dedupe_key);
   CREATE TABLE chunks (
     message_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     data BLOB NOT NULL,
     PRIMARY KEY (message_id, seq)
   );
   CREATE TABLE delivered (
     dedupe_key TEXT PRIMARY KEY,
     message_id TEXT NOT NULL,
     acked_at INTEGER NOT NULL
   );`,
  // 2: when the retry clock (age at dead-letter) starts; NULL = received_at. A replay resets it.
  `ALTER TABLE messages ADD COLUMN retry_from INTEGER;`,
  // 3: lease affinity. `agent` is the agent that last leased the message; after its
  // connection drops, only that agent may lease it until `affinity_until` (its journal
  // knows whether it was delivered), then any agent may.
  `ALTER TABLE messages ADD COLUMN agent TEXT;
   ALTER TABLE messages ADD COLUMN affinity_until INTEGER;`,
  // 4: failed messages owe their sender a bounce (states bouncing, bounced); SQLite cannot
  // change a CHECK, so the table is rebuilt. lease_ends: leases that ended without an answer
  // since the last settlement (a message that keeps breaking its connection is given up);
  // failure: why it failed for good; bounce_status: what the bounce relay answered;
  // settled_at: when it reached bounced/dead-letter (retention). The recipients list the
  // agent publishes, one row per part.
  `CREATE TABLE messages_v4 (
     id TEXT PRIMARY KEY,
     state TEXT NOT NULL CHECK (state IN (${check(STATES_V4)})),
     sender TEXT NOT NULL,
     recipients TEXT NOT NULL,
     results TEXT NOT NULL DEFAULT '[]',
     size INTEGER NOT NULL DEFAULT 0,
     sha256 TEXT,
     chunks INTEGER NOT NULL DEFAULT 0,
     dedupe_key TEXT,
     received_at INTEGER NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     next_attempt_at INTEGER,
     lease_session TEXT,
     last_error TEXT,
     retry_from INTEGER,
     agent TEXT,
     affinity_until INTEGER,
     lease_ends INTEGER NOT NULL DEFAULT 0,
     failure TEXT,
     bounce_status TEXT,
     settled_at INTEGER
   );
   INSERT INTO messages_v4 (id, state, sender, recipients, results, size, sha256, chunks, dedupe_key, received_at,
     attempts, next_attempt_at, lease_session, last_error, retry_from, agent, affinity_until)
   SELECT id, state, sender, recipients, results, size, sha256, chunks, dedupe_key, received_at,
     attempts, next_attempt_at, lease_session, last_error, retry_from, agent, affinity_until FROM messages;
   DROP TABLE messages;
   ALTER TABLE messages_v4 RENAME TO messages;
   CREATE INDEX messages_by_state ON messages (state, received_at);
   CREATE INDEX messages_by_dedupe ON messages (dedupe_key);
   CREATE TABLE recipient_parts (
     digest TEXT NOT NULL,
     part INTEGER NOT NULL,
     parts INTEGER NOT NULL,
     delimiter TEXT NOT NULL,
     entries TEXT NOT NULL,             -- JSON array
     received_at INTEGER NOT NULL,
     PRIMARY KEY (digest, part)
   );`,
  // 5: Cloudflare's verdicts on the message (JSON {spf, dkim, dmarc, arc}, RFC 8601 keywords);
  // NULL for messages stored before they were kept: the agent then writes 'none' for each.
  `ALTER TABLE messages ADD COLUMN auth TEXT;`,
  // 6: prefix: length of the Cloudflare block at the start of the stored bytes (0: none
  // stripped); sha256 and the dedupe key cover the bytes after it, the sender's message.
  `ALTER TABLE messages ADD COLUMN prefix INTEGER NOT NULL DEFAULT 0;`,
  // 7: the hold state (postsuper -h): the table is rebuilt for its CHECK, every column kept.
  `CREATE TABLE messages_v7 (
     id TEXT PRIMARY KEY,
     state TEXT NOT NULL CHECK (state IN (${check(STATES_V7)})),
     sender TEXT NOT NULL,
     recipients TEXT NOT NULL,
     results TEXT NOT NULL DEFAULT '[]',
     size INTEGER NOT NULL DEFAULT 0,
     sha256 TEXT,
     chunks INTEGER NOT NULL DEFAULT 0,
     dedupe_key TEXT,
     received_at INTEGER NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     next_attempt_at INTEGER,
     lease_session TEXT,
     last_error TEXT,
     retry_from INTEGER,
     agent TEXT,
     affinity_until INTEGER,
     lease_ends INTEGER NOT NULL DEFAULT 0,
     failure TEXT,
     bounce_status TEXT,
     settled_at INTEGER,
     auth TEXT,
     prefix INTEGER NOT NULL DEFAULT 0
   );
   INSERT INTO messages_v7 SELECT id, state, sender, recipients, results, size, sha256, chunks, dedupe_key, received_at,
     attempts, next_attempt_at, lease_session, last_error, retry_from, agent, affinity_until, lease_ends, failure,
     bounce_status, settled_at, auth, prefix FROM messages;
   DROP TABLE messages;
   ALTER TABLE messages_v7 RENAME TO messages;
   CREATE INDEX messages_by_state ON messages (state, received_at);
   CREATE INDEX messages_by_dedupe ON messages (dedupe_key);`,
  // 8: delay warnings (DELAY_WARNING_MS), one row per message that owes or got one: its own
  // lease, so a warning on its way never touches the message's state or lease. due_at: when it
  // is owed; next_attempt_at: when it may be offered (later after a relay that was down);
  // results: the pending recipients' last temporary failures (JSON); status: the relay's answer.
  // A row whose message is gone is pruned.
  `CREATE TABLE warnings (
     message_id TEXT PRIMARY KEY,
     state TEXT NOT NULL CHECK (state IN ('owed', 'sent', 'failed')),
     due_at INTEGER NOT NULL,
     next_attempt_at INTEGER NOT NULL,
     lease_session TEXT,
     results TEXT NOT NULL DEFAULT '[]',
     status TEXT
   );
   CREATE INDEX warnings_by_state ON warnings (state, next_attempt_at);`,
  // 9: bodies in R2 (issue #15). body_key: the R2 object holding the bytes after the block
  // (NULL: they are in `chunks`: stored before this, or by a Worker without a BODIES bucket);
  // md5: R2's MD5 of that object (the agent checks it; with its length and the envelope it
  // makes the dedupe key); head: the block and the header section after it (at most 64 KiB,
  // no body bytes), for the block the agent puts back, the admin view and bounces.
  // body_deletes: R2 objects of removed messages still to delete (noted in the commit that
  // removes the row; the delete itself is retried until R2 confirms it). The index serves the
  // orphan sweep's question: does any row own this R2 object?
  `ALTER TABLE messages ADD COLUMN body_key TEXT;
   ALTER TABLE messages ADD COLUMN md5 TEXT;
   ALTER TABLE messages ADD COLUMN head BLOB;
   CREATE INDEX messages_by_body_key ON messages (body_key);
   CREATE TABLE body_deletes (key TEXT PRIMARY KEY);`,
  // 10: a recipients list is replaced whole or not at all (issue #22). Parts on their way wait
  // here under the connection that sent them (one list per connection: a new digest drops the
  // older parts), are dropped with that connection, and move to recipient_parts in one commit
  // once all are here; recipient_parts then holds only the list in force. Stray parts an older
  // object kept there are dropped now.
  `CREATE TABLE recipient_staging (
     session TEXT NOT NULL,
     digest TEXT NOT NULL,
     part INTEGER NOT NULL,
     parts INTEGER NOT NULL,
     delimiter TEXT NOT NULL,
     entries TEXT NOT NULL,
     received_at INTEGER NOT NULL,
     PRIMARY KEY (session, part)
   );
   DELETE FROM recipient_parts WHERE digest NOT IN
     (SELECT digest FROM recipient_parts GROUP BY digest HAVING COUNT(*) = MAX(parts) AND MIN(parts) = MAX(parts));`,
  // 11: what the object does for one message reaches its rows through an index, whatever the
  // backlog (test/bridge-worker/store-plans.test.ts): the oldest first with its id as the tie
  // (no sort of every queued row), a connection's leases, the next time something is due, the
  // retry clock that expiry reads, agent affinity, bounce order, bounced rows past retention.
  // Partial where few rows qualify: an index entry is a row written on the Free plan's allowance too.
  `DROP INDEX messages_by_state;
   CREATE INDEX messages_by_state ON messages (state, received_at, id);
   CREATE INDEX messages_by_lease ON messages (lease_session) WHERE lease_session IS NOT NULL;
   CREATE INDEX messages_by_due ON messages (state, next_attempt_at) WHERE next_attempt_at IS NOT NULL;
   CREATE INDEX messages_by_retry_clock ON messages (state, COALESCE(retry_from, received_at));
   CREATE INDEX messages_by_affinity ON messages (affinity_until) WHERE state = 'queued' AND affinity_until IS NOT NULL;
   CREATE INDEX messages_by_bounce_order ON messages (settled_at, id) WHERE state = 'bouncing';
   CREATE INDEX messages_by_retention ON messages (settled_at) WHERE state = 'bounced';
   DROP INDEX warnings_by_state;
   CREATE INDEX warnings_by_state ON warnings (state, next_attempt_at, message_id);`,
  // 12: fewer rows written per message (the Free plan's 100,000 a day, where an index entry
  // written is a row; npm run bench:rows). The dedupe, body-key and retry-clock indexes hold only
  // the rows their readers ask for (a key set; queued or deferred), and body_deletes is its key's
  // b-tree alone (WITHOUT ROWID: no table beside the key's index). Rebuilding the dedupe memory
  // the same way would cost CPU in proportion to a day's mail, which no upgrade can wait out.
  `DROP INDEX messages_by_dedupe;
   CREATE INDEX messages_by_dedupe ON messages (dedupe_key) WHERE dedupe_key IS NOT NULL;
   DROP INDEX messages_by_body_key;
   CREATE INDEX messages_by_body_key ON messages (body_key) WHERE body_key IS NOT NULL;
   DROP INDEX messages_by_retry_clock;
   CREATE INDEX messages_queued_by_retry_clock ON messages (COALESCE(retry_from, received_at)) WHERE state = 'queued';
   CREATE INDEX messages_deferred_by_retry_clock ON messages (COALESCE(retry_from, received_at)) WHERE state = 'deferred';
   CREATE TABLE body_deletes_v12 (key TEXT PRIMARY KEY) WITHOUT ROWID;
   INSERT INTO body_deletes_v12 SELECT key FROM body_deletes;
   DROP TABLE body_deletes;
   ALTER TABLE body_deletes_v12 RENAME TO body_deletes;`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * A new object's storage as the migrations leave it, made in one step: replaying all twelve costs
 * a shard's first invocation about 3.5 ms of its 10 ms, this 0.4–0.9 (node:sqlite, median of 21).
 * schema-fresh.test.ts holds it equal to what the migrations make: a new migration changes it too.
 */
const FRESH = `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  CREATE TABLE chunks (message_id TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (message_id, seq));
  CREATE TABLE delivered (dedupe_key TEXT PRIMARY KEY, message_id TEXT NOT NULL, acked_at INTEGER NOT NULL);
  CREATE TABLE recipient_parts (digest TEXT NOT NULL, part INTEGER NOT NULL, parts INTEGER NOT NULL, delimiter TEXT NOT NULL,
    entries TEXT NOT NULL, received_at INTEGER NOT NULL, PRIMARY KEY (digest, part));
  CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN (${check(STATES_V7)})),
    sender TEXT NOT NULL, recipients TEXT NOT NULL, results TEXT NOT NULL DEFAULT '[]', size INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT, chunks INTEGER NOT NULL DEFAULT 0, dedupe_key TEXT, received_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER, lease_session TEXT, last_error TEXT, retry_from INTEGER,
    agent TEXT, affinity_until INTEGER, lease_ends INTEGER NOT NULL DEFAULT 0, failure TEXT, bounce_status TEXT,
    settled_at INTEGER, auth TEXT, prefix INTEGER NOT NULL DEFAULT 0, body_key TEXT, md5 TEXT, head BLOB);
  CREATE TABLE warnings (message_id TEXT PRIMARY KEY, state TEXT NOT NULL CHECK (state IN ('owed', 'sent', 'failed')),
    due_at INTEGER NOT NULL, next_attempt_at INTEGER NOT NULL, lease_session TEXT, results TEXT NOT NULL DEFAULT '[]', status TEXT);
  CREATE TABLE recipient_staging (session TEXT NOT NULL, digest TEXT NOT NULL, part INTEGER NOT NULL, parts INTEGER NOT NULL,
    delimiter TEXT NOT NULL, entries TEXT NOT NULL, received_at INTEGER NOT NULL, PRIMARY KEY (session, part));
  CREATE TABLE body_deletes (key TEXT PRIMARY KEY) WITHOUT ROWID;
  CREATE INDEX messages_by_state ON messages (state, received_at, id);
  CREATE INDEX messages_by_lease ON messages (lease_session) WHERE lease_session IS NOT NULL;
  CREATE INDEX messages_by_due ON messages (state, next_attempt_at) WHERE next_attempt_at IS NOT NULL;
  CREATE INDEX messages_by_affinity ON messages (affinity_until) WHERE state = 'queued' AND affinity_until IS NOT NULL;
  CREATE INDEX messages_by_bounce_order ON messages (settled_at, id) WHERE state = 'bouncing';
  CREATE INDEX messages_by_retention ON messages (settled_at) WHERE state = 'bounced';
  CREATE INDEX warnings_by_state ON warnings (state, next_attempt_at, message_id);
  CREATE INDEX messages_by_dedupe ON messages (dedupe_key) WHERE dedupe_key IS NOT NULL;
  CREATE INDEX messages_by_body_key ON messages (body_key) WHERE body_key IS NOT NULL;
  CREATE INDEX messages_queued_by_retry_clock ON messages (COALESCE(retry_from, received_at)) WHERE state = 'queued';
  CREATE INDEX messages_deferred_by_retry_clock ON messages (COALESCE(retry_from, received_at)) WHERE state = 'deferred';`;

/** Brings storage to SCHEMA_VERSION (`to`: an older one, for the tests of an upgrade). Runs inside blockConcurrencyWhile. */
export function migrate(sql: SqlStorage, to = SCHEMA_VERSION): void {
  const hasMeta = sql.exec(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'`).toArray().length > 0;
  let version = 0;
  if (hasMeta) {
    const row = sql.exec(`SELECT value FROM meta WHERE key = 'schema_version'`).toArray()[0];
    version = row ? Number(row.value) : 0;
  }
  if (version > SCHEMA_VERSION) {
    throw new Error(`storage schema ${version} is newer than this code (${SCHEMA_VERSION}): roll forward, not back`);
  }
  if (version === 0 && to === SCHEMA_VERSION) {
    sql.exec(FRESH);
    sql.exec(`INSERT INTO meta (key, value) VALUES ('schema_version', ?)`, String(SCHEMA_VERSION));
    return;
  }
  for (let v = version; v < to; v++) {
    sql.exec(MIGRATIONS[v] ?? '');
    sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)`, String(v + 1));
  }
}
