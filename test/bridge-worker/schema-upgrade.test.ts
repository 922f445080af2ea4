// Schema 12 rebuilds the R2 delete list (WITHOUT ROWID) and narrows three indexes (bench:rows). An object upgraded with mail in it keeps every row, and answers as before.
import t from 'tap';
import { DatabaseSync } from 'node:sqlite';
import { migrate, SCHEMA_VERSION } from '../../bridge-worker/schema.ts';
import { MessageStore } from '../../bridge-worker/store.ts';
import { nodeSql } from './node-sql.ts';

const AUTH = { spf: 'pass', dkim: 'pass', dmarc: 'pass', arc: 'none' } as const;

t.test('an object at schema 11 with mail in it upgrades to 12 keeping every row', async (t) => {
  t.equal(SCHEMA_VERSION, 12);
  const db = new DatabaseSync(':memory:');
  const sql = nodeSql(db);
  migrate(sql, 11);
  const store = new MessageStore(sql);
  const head = new Uint8Array(16);
  store.insertStored('q1', 's@example.net', ['a@example.org'], 1_000, { key: 'queue/q1', size: 10, md5: 'x', prefix: 0, head }, 'key:q1', AUTH);
  store.insertStored('d1', 's@example.net', ['a@example.org'], 1_001, { key: 'queue/d1', size: 10, md5: 'x', prefix: 0, head }, 'key:d1', AUTH);
  store.defer('d1', ['a@example.org'], [], 50_000, '451 later');
  store.insertStored('gone', 's@example.net', ['a@example.org'], 1_002, { key: 'queue/gone', size: 10, md5: 'x', prefix: 0, head }, 'key:gone', AUTH);
  store.finish('gone', 'key:gone', 2_000);
  const before = (q: string) => db.prepare(q).all();
  const rows = { messages: before('SELECT * FROM messages ORDER BY id'), delivered: before('SELECT * FROM delivered'), deletes: before('SELECT * FROM body_deletes ORDER BY key') };
  t.equal(rows.delivered.length, 1, 'a key remembered');
  t.same(rows.deletes, [{ key: 'queue/gone' }], 'an R2 delete owed');

  migrate(sql);
  t.equal((db.prepare(`SELECT value FROM meta WHERE key = 'schema_version'`).get() as { value: string }).value, '12');
  t.same(before('SELECT * FROM messages ORDER BY id'), rows.messages, 'messages as they were');
  t.same(before('SELECT * FROM delivered'), rows.delivered, 'the dedupe memory as it was');
  t.same(before('SELECT * FROM body_deletes ORDER BY key'), rows.deletes, 'the R2 deletes as they were');
  const without = before(`SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE '%WITHOUT ROWID%' ORDER BY name`);
  t.same(without, [{ name: 'body_deletes' }], 'the delete list is its key\'s b-tree');

  // And it answers as before: a duplicate of the delivered one, of the queued one; expiry; prune.
  t.equal(store.findDuplicate('key:gone', 1_500), 'gone');
  t.equal(store.findDuplicate('key:q1', 0), 'q1');
  t.equal(store.findDuplicate('key:none', 0), null);
  t.same(store.owedSince(1_001).map((m) => m.id).sort(), ['d1', 'q1'], 'the queued and the deferred, by their retry clocks');
  t.equal(store.nextDeadline(10_000, 5_000), 6_000, 'the first to expire: q1 at 1,000 + 5,000');
  store.pruneDedupe(2_001);
  t.same(before('SELECT * FROM delivered'), [], 'the key pruned past its window');
});
