// The object's one alarm: what is due by now (silent agents closed, deferred messages woken,
// expired ones failed, old rows pruned, storage checked, R2 deletes and the orphan sweep) and
// when it is next due. Alarms may run more than once: everything here is idempotent.
import { deleteBodies, sweepDueAt, sweepOrphans } from './body-lifecycle.ts';
import { now as clock, realTime } from './clock.ts';
import { closeSilentAgents } from './connections.ts';
import { readConfig } from './env.ts';
import { log } from './log.ts';
import { pumpAll } from './pump.ts';
import type { QueueContext } from './queue-context.ts';
import { expireAfterMs, expireDue } from './settle.ts';
import { nearLimit, STORAGE_CHECK_MS } from './storage.ts';

/** An ingest that has not finished after this long crashed; its rows are removed. */
const STALE_INCOMING_MS = 60 * 60_000;
const HOUSEKEEPING_MS = 60 * 60_000;
/** meta key: when this object next sums its storage (storage.ts). */
const STORAGE_CHECK_AT = 'storage_check_at';
/** meta key: when the dedupe memory is next pruned. */
const DEDUPE_PRUNE_AT = 'dedupe_prune_at';

export async function runAlarm(q: QueueContext): Promise<void> {
  const now = clock();
  q.pumpPending = false;
  closeSilentAgents(q, Date.now());  // the runtime's heartbeat times are real
  const woken = q.store.wakeDeferred(now);
  expireDue(q, now);
  const cfg = readConfig(q.env);
  q.store.prune(now - STALE_INCOMING_MS, now - cfg.retentionMs);
  pruneDedupe(q, now, cfg.dedupeWindowMs);
  if (woken > 0) log('deferred.due', { woken });
  checkStorage(q, now, cfg.shards);
  pumpAll(q);
  await deleteBodies(q);
  await sweepOrphans(q, now);
  await scheduleAlarm(q);
}

/** Sets the alarm for the earliest of: a deadline in the store, housekeeping, a pending pump, the silence check, the sweep. */
export async function scheduleAlarm(q: QueueContext): Promise<void> {
  const now = clock();
  const deadline = q.store.nextDeadline(now, expireAfterMs(q));
  let at = deadline === null ? now + HOUSEKEEPING_MS : Math.min(deadline, now + HOUSEKEEPING_MS);
  // Chunks a pump left for want of budget: at once, in an invocation of their own.
  if (q.pumpPending) at = now;
  // While agents are connected, look for silent ones every half silence limit.
  if (q.state.getWebSockets().length > 0) at = Math.min(at, now + Math.max(500, readConfig(q.env).agentSilentMs / 2));
  // The orphan sweep's next page (set once this shard stored a body in R2).
  const sweepAt = sweepDueAt(q);
  if (sweepAt !== null) at = Math.min(at, Math.max(now, sweepAt));
  const current = await q.state.storage.getAlarm();
  if (current === null || current > realTime(at)) await q.state.storage.setAlarm(realTime(at));
}

/**
 * At most hourly: the prune reads every key of the day, and with an agent online the alarm runs
 * every 45 s (1,920 a day against the Free plan's 5 M rows read: about 2,500 messages a day).
 */
function pruneDedupe(q: QueueContext, now: number, windowMs: number): void {
  if (dueEvery(q, DEDUPE_PRUNE_AT, now, HOUSEKEEPING_MS)) q.store.pruneDedupe(now - windowMs);
}

/** At most every STORAGE_CHECK_MS: a warning once this object's use nears its share of the Free plan's storage. */
function checkStorage(q: QueueContext, now: number, shards: number): void {
  if (!dueEvery(q, STORAGE_CHECK_AT, now, STORAGE_CHECK_MS)) return;
  const r2 = Object.values(q.store.stored()).reduce((n, s) => n + s.r2Bytes, 0);
  for (const w of nearLimit(q.state.storage.sql.databaseSize, r2, shards)) log('storage.near-limit', { ...w, shards });
}

/** True at most once every `everyMs`, by the time kept under meta `key` (the object may restart in between). */
function dueEvery(q: QueueContext, key: string, now: number, everyMs: number): boolean {
  if (now < Number(q.store.meta(key) ?? 0)) return false;
  q.store.setMeta(key, String(now + everyMs));
  return true;
}
