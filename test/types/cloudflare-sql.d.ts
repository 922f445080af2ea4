// Cloudflare's SqlStorage, as far as bridge-worker/store.ts and schema.ts use it, for the tests
// that run them on node:sqlite (test/bridge-worker/node-sql.ts). The real declaration is
// @cloudflare/workers-types', which bridge-worker/tsconfig.json checks them against.
declare global {
  type SqlStorageValue = ArrayBuffer | string | number | null;
  interface SqlStorageCursor<T extends Record<string, SqlStorageValue>> extends Iterable<T> {
    toArray(): T[];
    one(): T;
    readonly rowsWritten: number;
  }
  interface SqlStorage {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- as Cloudflare declares it
    exec<T extends Record<string, SqlStorageValue>>(query: string, ...bindings: any[]): SqlStorageCursor<T>;
  }
}
export {};
