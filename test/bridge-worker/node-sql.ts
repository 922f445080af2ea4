// The queue's store (bridge-worker/store.ts) on node:sqlite instead of a Durable Object's
// SQLite: the same SQL, so its query plans can be read in a plain test. Each statement the store
// runs is passed to `seen` with its bindings.
import { DatabaseSync, type SQLInputValue } from 'node:sqlite';

export function nodeSql(db: DatabaseSync, seen?: (query: string, bindings: SQLInputValue[]) => void): SqlStorage {
  return {
    exec<T extends Record<string, SqlStorageValue>>(query: string, ...bindings: SQLInputValue[]): SqlStorageCursor<T> {
      let rows: T[] = [];
      let written = 0;
      // A migration is several statements and no bindings; everything else is one statement.
      if (bindings.length === 0 && /;\s*\S/.test(query.trim())) db.exec(query);
      else {
        seen?.(query, bindings);
        rows = db.prepare(query).all(...bindings.map((b) => (b instanceof ArrayBuffer ? new Uint8Array(b) : b))) as T[];
        written = Number((db.prepare('SELECT changes() AS n').get() as { n: number }).n);
      }
      return {
        toArray: () => rows,
        one: () => {
          if (rows.length !== 1) throw new Error(`expected one row, got ${rows.length}`);
          return rows[0] as T;
        },
        rowsWritten: written,
        [Symbol.iterator]: () => rows[Symbol.iterator](),
      };
    },
  };
}
