// The queue's per-message work must not grow with the queue: every statement the object runs
// for one message (ingest, pump, lease, ack, the alarm it sets after each) reaches its rows
// through an index. A full scan of `messages`, or a sort of all its queued rows, costs the
// object CPU in proportion to the backlog, and the Free plan allows 10 ms per invocation: the
// bench drained 10,000 queued messages at 7.4 ms of workerd CPU each (1.4 at 1,000), and every
// row a statement reads counts against the Free plan's 5 M a day (npm run bench:rows). The
// dedupe memory's hourly prune reads the day's keys by design (alarm.ts). Checked on node:sqlite with the
// object's own schema and SQL (node-sql.ts), by SQLite's query plans, without statistics, as in
// workerd (it never runs ANALYZE).
import t from 'tap';
import { DatabaseSync, type SQLInputValue } from 'node:sqlite';
import { migrate } from '../../bridge-worker/schema.ts';
import { MessageStore } from '../../bridge-worker/store.ts';
import { WarningStore } from '../../bridge-worker/warning-store.ts';
import { nodeSql } from './node-sql.ts';

const AUTH = { spf: 'pass', dkim: 'pass', dmarc: 'pass', arc: 'none' } as const;
const N = 3000;

function backlog(): { db: DatabaseSync; store: MessageStore; warnings: WarningStore; seen: Map<string, SQLInputValue[]> } {
  const db = new DatabaseSync(':memory:');
  const seen = new Map<string, SQLInputValue[]>();
  let recording = false;
  const sql = nodeSql(db, (q, b) => { if (recording) seen.set(q, b); });
  migrate(sql);
  const store = new MessageStore(sql);
  const warnings = new WarningStore(sql);
  const head = new Uint8Array(64);
  db.exec('BEGIN');
  for (let i = 0; i < N; i++) {
    const id = `m${String(i).padStart(6, '0')}`;
    store.insertStored(id, 's@example.net', ['a@example.org'], 1_000 + i, { key: `queue/${i.toString(16).padStart(32, '0')}`, size: 10240, md5: 'x', prefix: 0, head }, `md5:${i}`, AUTH);
    if (i % 10 === 1) store.defer(id, ['a@example.org'], [], 50_000 + i, '451 later');
    if (i % 100 === 2) store.fail(id, 'bouncing', 'refused', [], [], '550 no', null, 2_000 + i);
  }
  for (let i = 0; i < 16; i++) store.lease(`m${String(i * 10).padStart(6, '0')}`, 's1', 'agent');
  db.exec('COMMIT');
  recording = true;
  return { db, store, warnings, seen };
}

/**
 * Plan lines that walk every row of `messages`, or of one of its states, or sort them. A search
 * on the state alone walks the whole state unless the statement stops early (LIMIT, in index
 * order) or takes the MIN of the index's next column (one seek). (The object's start-up
 * checks, once per start, are left out.)
 */
function scans(db: DatabaseSync, query: string, bindings: SQLInputValue[]): string[] {
  const plan = db.prepare(`EXPLAIN QUERY PLAN ${query}`).all(...bindings) as { detail: string }[];
  const nextColumn = (index: string): string | null => {
    const cols = db.prepare(`PRAGMA index_xinfo(${JSON.stringify(index)})`).all() as { seqno: number; name: string | null; key: number }[];
    const c = cols.find((x) => x.seqno === 1 && x.key === 1);
    return c ? (c.name ?? 'expression') : null;
  };
  return plan.map((p) => p.detail).filter((d) => {
    if (/TEMP B-TREE/.test(d)) return true;
    // A walk of an index in its order, stopped by LIMIT, reads as far as the first row that fits.
    if (/^SCAN (messages|m)\b/.test(d)) return !(/USING (COVERING )?INDEX/.test(d) && /\bLIMIT\b/.test(query));
    const state = /^SEARCH (?:messages|m) USING (?:COVERING )?INDEX (\S+) \(state=\?\)$/.exec(d);
    if (!state?.[1]) return false;
    if (/\bLIMIT\b/.test(query)) return false;
    const col = nextColumn(state[1]);
    return !(col && new RegExp(`MIN\\(${col === 'expression' ? 'COALESCE' : col}\\b`).test(query));
  });
}

t.test(`one message's statements reach their rows through an index, ${N} messages queued`, async (t) => {
  const { db, store, warnings, seen } = backlog();
  const now = 10_000;
  // The pump, for one connection with room: what it holds, the next bounce, warning, message.
  store.countLeased('s1');
  store.nextBounce(now);
  warnings.nextWarning(now);
  const next = store.nextQueued('agent', now, true, true);
  t.ok(next, 'a message to lease');
  if (!next) return;
  store.lease(next.id, 's1', 'agent');
  store.get(next.id);
  // Its ack: delivered and removed, the dedupe key kept; a deferral; a failure.
  store.finish(next.id, store.dedupeKeyOf(next.id), now);
  store.defer('m000003', ['a@example.org'], [], now + 60_000, '451 later');
  store.fail('m000004', 'bouncing', 'refused', [], [], '550 no', null, now);
  // A new message: its duplicate check and its row.
  store.findDuplicate('md5:999999', now - 86_400_000);
  store.insertStored('new', 's@example.net', ['a@example.org'], now, { key: 'queue/'.padEnd(38, 'f'), size: 10240, md5: 'x', prefix: 0, head: new Uint8Array(64) }, 'md5:new', AUTH);
  // After each of these, the object sets its alarm.
  store.nextDeadline(now, 5 * 86_400_000);
  t.ok(seen.size >= 12, `${seen.size} statements seen`);
  const found = [...seen].flatMap(([q, b]) => scans(db, q, b).map((d) => `${d}  <-  ${q.replace(/\s+/g, ' ').slice(0, 400)}`));
  for (const f of found) t.comment(f);
  t.same(found, [], 'no full scan of messages, no sort of many rows');
});

t.test('the alarm\'s own statements too: expiry, wake-ups, housekeeping', async (t) => {
  const { db, store, seen } = backlog();
  const now = 10_000;
  store.owedSince(now - 5_000);
  store.wakeDeferred(now);
  store.prune(now - 3_600_000, now - 30 * 86_400_000);
  const found = [...seen].flatMap(([q, b]) => scans(db, q, b).map((d) => `${d}  <-  ${q.replace(/\s+/g, ' ').slice(0, 400)}`));
  for (const f of found) t.comment(f);
  t.same(found, [], 'no full scan of messages, no sort of many rows');
});
