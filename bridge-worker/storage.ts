// What the queue stores, seen before it runs out: bytes by state (dead-letter and hold
// included: mail no one will move on its own) and the Free plan's limits. The object checks its
// own use at most hourly from the alarm and logs storage.near-limit at WARN_PERCENT of its share.
import type { StorageUse, Stored } from '../protocol/admin.ts';
import type { State } from '../protocol/queue.ts';

/** Cloudflare's Free plan: Durable Object (SQLite) storage 5 GB per account, R2 10 GB-month. */
export const OBJECT_LIMIT_BYTES = 5_000_000_000;
export const R2_LIMIT_BYTES = 10_000_000_000;
/** Warn at this share of a limit: time to replay, purge or upgrade before ingest fails. */
export const WARN_PERCENT = 80;
/** Between two checks of this object's use (one SUM over its rows). */
export const STORAGE_CHECK_MS = 60 * 60_000;

export function storageUse(objectBytes: number, r2Bytes: number): StorageUse {
  return { objectBytes, objectLimitBytes: OBJECT_LIMIT_BYTES, r2Bytes, r2LimitBytes: R2_LIMIT_BYTES, warnPercent: WARN_PERCENT };
}

/**
 * The stores at or past WARN_PERCENT of this object's share of their limit (the account's limit
 * spread over `shards` objects: each sees only its own rows).
 */
export function nearLimit(objectBytes: number, r2Bytes: number, shards: number): { store: 'object' | 'r2'; usedBytes: number; shareBytes: number; percent: number }[] {
  const out = [];
  for (const [store, used, limit] of [['object', objectBytes, OBJECT_LIMIT_BYTES], ['r2', r2Bytes, R2_LIMIT_BYTES]] as const) {
    const share = limit / Math.max(1, shards);
    const percent = Math.floor((used / share) * 100);
    if (percent >= WARN_PERCENT) out.push({ store, usedBytes: used, shareBytes: Math.floor(share), percent });
  }
  return out;
}

/** Sums per-state stored bytes across shards. */
export function addStored(a: Record<State, Stored>, b: Record<State, Stored>): Record<State, Stored> {
  const out = { ...a };
  for (const k of Object.keys(b) as State[]) {
    const x = a[k] ?? { bodies: 0, bytes: 0, r2Bytes: 0 };
    const y = b[k];
    out[k] = { bodies: x.bodies + y.bodies, bytes: x.bytes + y.bytes, r2Bytes: x.r2Bytes + y.r2Bytes };
  }
  return out;
}
