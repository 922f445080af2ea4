// A new object makes its storage in one step (schema.ts FRESH) instead of replaying every
// migration. Both must leave the same tables, columns, checks and indexes: compared here by
// SQLite's own record of them, the whitespace, comments and quoting of their text aside.
import t from 'tap';
import { DatabaseSync } from 'node:sqlite';
import { migrate, SCHEMA_VERSION } from '../../bridge-worker/schema.ts';
import { nodeSql } from './node-sql.ts';

function schemaOf(db: DatabaseSync): string[] {
  const rows = db.prepare(`SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name`).all() as { type: string; name: string; tbl_name: string; sql: string }[];
  return rows.map((r) => `${r.type} ${r.name} on ${r.tbl_name}: ${r.sql
    .replace(/--[^\n]*/g, ' ').replace(/"/g, '').replace(/\s+/g, ' ')
    .replace(/\(\s+/g, '(').replace(/\s+\)/g, ')').replace(/\s*,\s*/g, ', ').trim()}`);
}

t.test('a new object\'s storage equals what the migrations make', async (t) => {
  const replayed = new DatabaseSync(':memory:');
  migrate(nodeSql(replayed), 1);  // a storage of schema 1, brought up by every migration since
  migrate(nodeSql(replayed));
  const fresh = new DatabaseSync(':memory:');
  migrate(nodeSql(fresh));
  t.same(schemaOf(fresh), schemaOf(replayed));
  for (const db of [fresh, replayed]) {
    t.equal((db.prepare(`SELECT value FROM meta WHERE key = 'schema_version'`).get() as { value: string }).value, String(SCHEMA_VERSION));
  }
  t.equal(schemaOf(fresh).length, 19, 'every table and index compared (8 tables, 11 indexes)');
});
