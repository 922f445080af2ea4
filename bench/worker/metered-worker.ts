// Bench only: the real Worker, its queue object metered (bench/lib/sql-meter.ts). local's
// worker runtime bundles this instead of bridge-worker/index.ts (its `entry`); the class keeps
// the name the wrangler config binds, RelayQueue. The object's storage is wrapped before the
// real constructor runs, so every statement it ever runs is counted; each entry point the
// runtime calls is wrapped to say whose the rows are. meterTake() is the bench's way to them.
import { RelayQueue as Queue } from '../../bridge-worker/relay-do.ts';
import type { Env } from '../../bridge-worker/env.ts';
import { SqlMeter, type MeterReport } from '../lib/sql-meter.ts';

export { default } from '../../bridge-worker/index.ts';

export class RelayQueue extends Queue {
  readonly meter: SqlMeter;

  constructor(ctx: DurableObjectState, env: Env) {
    const meter = new SqlMeter();
    meterStorage(ctx.storage, meter);
    super(ctx, env);
    this.meter = meter;
  }

  /** What the object's storage counted since the last call (not itself an invocation the meter counts). */
  async meterTake(): Promise<MeterReport> {
    return this.meter.take();
  }
}

/** The object's storage, its SQL and the calls that count as rows, counted by `meter`. */
function meterStorage(storage: DurableObjectStorage, meter: SqlMeter): void {
  const sql = storage.sql;
  // exec is generic in its row type; the wrapper returns the very cursor exec returned.
  sql.exec = meter.wrapExec(sql.exec.bind(sql)) as typeof sql.exec;
  const setAlarm = storage.setAlarm.bind(storage);
  storage.setAlarm = (t, o) => { meter.storageCall('setAlarm'); return setAlarm(t, o); };
  const deleteAlarm = storage.deleteAlarm.bind(storage);
  storage.deleteAlarm = (o) => { meter.storageCall('deleteAlarm'); return deleteAlarm(o); };
  const getAlarm = storage.getAlarm.bind(storage);
  storage.getAlarm = (o) => { meter.storageCall('getAlarm'); return getAlarm(o); };
  // KV on a SQLite-backed object (only the test clock uses it): one row per key.
  const keys = (k: unknown): number => (Array.isArray(k) ? k.length : typeof k === 'object' && k !== null ? Object.keys(k).length : 1);
  const wrap = (name: 'get' | 'put' | 'delete'): void => {
    const f = (storage[name] as (...a: unknown[]) => unknown).bind(storage);
    (storage as unknown as Record<string, unknown>)[name] = (...a: unknown[]) => { meter.storageCall(name, keys(a[0])); return f(...a); };
  };
  wrap('get');
  wrap('put');
  wrap('delete');
}

/** webSocketMessage's kind: the frame's type (`ws:ack`, `ws:hello`, …). */
function frameKind(args: unknown[]): string {
  const data = args[1];
  if (typeof data !== 'string') return 'ws:binary';
  return `ws:${/^\{"type":"([a-z-]+)"/.exec(data)?.[1] ?? '?'}`;
}

// Every method of the real class (RPC methods, fetch, webSocket*, alarm; a new one too) is
// wrapped on this prototype, where the runtime looks handlers up: its rows are its kind's.
const real = Queue.prototype as unknown as Record<string, unknown>;
const metered = RelayQueue.prototype as unknown as Record<string, unknown>;
for (const name of Object.getOwnPropertyNames(Queue.prototype)) {
  const f = real[name];
  if (name === 'constructor' || typeof f !== 'function') continue;
  metered[name] = async function (this: RelayQueue, ...args: unknown[]): Promise<unknown> {
    return this.meter.run(name === 'webSocketMessage' ? frameKind(args) : name, () => (f as (...a: unknown[]) => unknown).apply(this, args));
  };
}
