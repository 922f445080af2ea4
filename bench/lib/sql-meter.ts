// Rows read and written by a SQLite-backed Durable Object, as Cloudflare's Free plan counts them
// (5 million rows read, 100,000 rows written a day): workerd's own counts from each SQL cursor
// (`rowsRead`, `rowsWritten`: every index entry a statement writes is one more row), plus the
// storage calls that count as rows: each `setAlarm`/`deleteAlarm` one row written, each key a KV
// `get` reads one row read, each key a `put`/`delete` writes one row written. `getAlarm` is
// counted apart (not a row). Bench only (bench/worker/metered-worker.ts wraps the real object's
// storage with it); typed structurally so that it needs neither Node's nor workerd's types.

/** What the meter reads of a workerd SqlStorageCursor: final once the cursor is consumed. */
export interface CursorCounts {
  readonly rowsRead: number;
  readonly rowsWritten: number;
}

export interface Tally {
  /** Statements run (or storage calls made). */
  calls: number;
  rowsRead: number;
  rowsWritten: number;
}

export interface KindTally extends Tally {
  /** Invocations of this kind (RPC calls, frames, alarms) since the last take(). */
  invocations: number;
  /** Of calls / rows: the storage calls that are not SQL (alarms, KV). */
  alarmsSet: number;
  alarmReads: number;
  kvCalls: number;
}

export interface MeterReport {
  /** By invocation kind: 'start' (the constructor), 'ingest', 'ws:ack', 'alarm', … */
  kinds: Record<string, KindTally>;
  /** By statement (whitespace collapsed, a long select list shortened) and kind. */
  statements: Record<string, Record<string, Tally>>;
}

const zero = (): Tally => ({ calls: 0, rowsRead: 0, rowsWritten: 0 });
/** Adds `t`'s calls and rows into `into`. */
function addTally(into: Tally, t: Tally): void {
  into.calls += t.calls;
  into.rowsRead += t.rowsRead;
  into.rowsWritten += t.rowsWritten;
}
const zeroKind = (): KindTally => ({ ...zero(), invocations: 0, alarmsSet: 0, alarmReads: 0, kvCalls: 0 });

/** A statement's text as one line, its select list (ROW's 25 columns) shortened to `…`. */
export function statementKey(sql: string): string {
  const one = sql.replace(/\s+/g, ' ').trim();
  return one.replace(/^SELECT (?!COALESCE|EXISTS|MIN|\(SELECT)([^()]{60,}?) FROM /, 'SELECT … FROM ');
}

interface Pending { cursor: CursorCounts; kind: string; key: string }

export class SqlMeter {
  /** The invocation running now (the constructor's work until the first one starts). */
  #kind = 'start';
  #pending: Pending[] = [];
  #kinds = new Map<string, KindTally>();
  #statements = new Map<string, Map<string, Tally>>();

  /** An `exec` that notes each cursor it returns: its counts are read once the invocation ends. */
  wrapExec<A extends unknown[], C extends CursorCounts>(exec: (sql: string, ...bindings: A) => C): (sql: string, ...bindings: A) => C {
    return (sql, ...bindings) => {
      const cursor = exec(sql, ...bindings);
      this.#pending.push({ cursor, kind: this.#kind, key: statementKey(sql) });
      return cursor;
    };
  }

  /** A storage call that is not SQL, with the rows it counts as. */
  storageCall(name: 'setAlarm' | 'deleteAlarm' | 'getAlarm' | 'get' | 'put' | 'delete', keys = 1): void {
    const k = this.#kindTally(this.#kind);
    const rows = name === 'getAlarm' ? { r: 0, w: 0 } : name === 'get' ? { r: keys, w: 0 } : { r: 0, w: keys };
    if (name === 'setAlarm' || name === 'deleteAlarm') k.alarmsSet++;
    else if (name === 'getAlarm') k.alarmReads++;
    else k.kvCalls++;
    this.#add(`storage.${name}()`, this.#kind, rows.r, rows.w);
  }

  /** Runs one invocation of `kind`: what it does until it settles is counted as that kind's. */
  async run<T>(kind: string, fn: () => Promise<T> | T): Promise<T> {
    const outer = this.#kind;
    this.#kind = kind;
    this.#kindTally(kind).invocations++;
    try {
      return await fn();
    } finally {
      this.#flush();
      this.#kind = outer;
    }
  }

  /** What was counted since the last take(), and a fresh start. */
  take(): MeterReport {
    this.#flush();
    const report: MeterReport = {
      kinds: Object.fromEntries(this.#kinds),
      statements: Object.fromEntries([...this.#statements].map(([s, m]) => [s, Object.fromEntries(m)])),
    };
    this.#kinds = new Map();
    this.#statements = new Map();
    return report;
  }

  #flush(): void {
    for (const p of this.#pending.splice(0)) this.#add(p.key, p.kind, p.cursor.rowsRead, p.cursor.rowsWritten);
  }

  #add(key: string, kind: string, read: number, written: number): void {
    const one = { calls: 1, rowsRead: read, rowsWritten: written };
    addTally(this.#kindTally(kind), one);
    let byKind = this.#statements.get(key);
    if (!byKind) this.#statements.set(key, byKind = new Map());
    const t = byKind.get(kind) ?? zero();
    addTally(t, one);
    byKind.set(kind, t);
  }

  #kindTally(kind: string): KindTally {
    let k = this.#kinds.get(kind);
    if (!k) this.#kinds.set(kind, k = zeroKind());
    return k;
  }
}

/** Sums reports (of several objects, or runs). */
export function addReports(a: MeterReport, b: MeterReport): MeterReport {
  const kinds: Record<string, KindTally> = {};
  const statements: Record<string, Record<string, Tally>> = {};
  for (const r of [a, b]) {
    for (const [k, t] of Object.entries(r.kinds)) {
      const x = kinds[k] ??= zeroKind();
      addTally(x, t);
      x.invocations += t.invocations;
      x.alarmsSet += t.alarmsSet;
      x.alarmReads += t.alarmReads;
      x.kvCalls += t.kvCalls;
    }
    for (const [s, m] of Object.entries(r.statements)) {
      const into = statements[s] ??= {};
      for (const [k, t] of Object.entries(m)) addTally(into[k] ??= zero(), t);
    }
  }
  return { kinds, statements };
}

/** A report's totals over every kind. */
export function totals(r: MeterReport): Tally {
  const t = zero();
  for (const k of Object.values(r.kinds)) addTally(t, k);
  return t;
}
