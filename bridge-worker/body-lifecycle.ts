// Bodies in R2 after their message: deleted once the commit that removed their row is on
// disk, and the orphan sweep for those no row came to own (bodies.ts stores them).
import { OWNER } from './bodies.ts';
import { now as clock } from './clock.ts';
import { readConfig } from './env.ts';
import { log } from './log.ts';
import type { QueueContext } from './queue-context.ts';

/** meta keys of the orphan sweep: this shard's R2 prefix, when the next page is due, where the listing stands. */
const BODIES_PREFIX = 'bodies_prefix';
const SWEEP_AT = 'orphan_sweep_at';
const SWEEP_CURSOR = 'orphan_sweep_cursor';
/** R2 keys listed per sweep invocation (R2 lists at most 1,000). */
const SWEEP_PAGE = 500;
/** While a listing goes on, its next page after this long (or ORPHAN_SWEEP_MS, if shorter). */
const SWEEP_NEXT_PAGE_MS = 60_000;
/**
 * An R2 object younger than this is never an orphan: its put may have just completed and its
 * ingestStored be on its way (email() lives at most EMAIL_BUDGET_MS, 25 s).
 */
export const ORPHAN_GRACE_MS = 60 * 60_000;
/** R2 keys deleted per call (R2 takes at most 1,000). */
const MAX_DELETES = 1000;

/**
 * The sweep lists this shard's prefix, learned from its keys (the object does not know its
 * name). True when this started the sweep's clock (the alarm must be set for it).
 */
export function learnBodiesPrefix(q: QueueContext, prefix: string): boolean {
  if (q.store.meta(BODIES_PREFIX) === prefix) return false;
  q.store.setMeta(BODIES_PREFIX, prefix);
  if (q.store.meta(SWEEP_AT) !== null) return false;
  q.store.setMeta(SWEEP_AT, String(clock() + readConfig(q.env).orphanSweepMs));
  return true;
}

/** When the orphan sweep's next page is due (null: no bucket, or no body stored here yet). */
export function sweepDueAt(q: QueueContext): number | null {
  const at = q.env.BODIES ? q.store.meta(SWEEP_AT) : null;
  return at === null ? null : Number(at);
}

/**
 * Deletes the R2 objects of removed messages, noted in the commit that removed them, up to
 * MAX_DELETES per call (one R2 call). The runtime sends the delete only once that commit is
 * on disk (output gate), so a body never goes before its row. One that fails stays noted:
 * the next handler or the alarm tries again. Nothing to do without a bucket.
 */
export async function deleteBodies(q: QueueContext): Promise<void> {
  const bucket = q.env.BODIES;
  if (!bucket) return;
  const keys = q.store.bodyDeletes(MAX_DELETES);
  if (keys.length === 0) return;
  try {
    await bucket.delete(keys);
    q.store.bodiesDeleted(keys);
  } catch (err) {
    log('bodies.delete-failed', { keys: keys.length, error: String(err) });
  }
}

/**
 * The orphan sweep: R2 objects under this shard's prefix, stamped with this object's id
 * (bodies.ts OWNER), that no row owns (a put whose ingestStored never committed: email() cut
 * off, the RPC lost; a body whose delete was never noted) are deleted. One page of at most SWEEP_PAGE keys per alarm, every ORPHAN_SWEEP_MS,
 * the next page a minute later while the listing goes on; only objects older than
 * ORPHAN_GRACE_MS, so a put whose ingestStored is still on its way is never touched.
 */
export async function sweepOrphans(q: QueueContext, now: number): Promise<void> {
  const store = q.store;
  const bucket = q.env.BODIES;
  const prefix = store.meta(BODIES_PREFIX);
  if (!bucket || prefix === null || now < Number(store.meta(SWEEP_AT) ?? 0)) return;
  const cursor = store.meta(SWEEP_CURSOR);
  const sweepMs = readConfig(q.env).orphanSweepMs;
  let page: R2Objects;
  try {
    // `include` (honoured since compatibility date 2022-08-04) is not in the pinned workers-types.
    const options: R2ListOptions & { include: 'customMetadata'[] } = {
      prefix, limit: SWEEP_PAGE, include: ['customMetadata'], ...(cursor !== null ? { cursor } : {}),
    };
    page = await bucket.list(options);
  } catch (err) {
    // A cursor R2 no longer takes starts the listing over; either way, again next round.
    store.deleteMeta(SWEEP_CURSOR);
    store.setMeta(SWEEP_AT, String(now + sweepMs));
    log('bodies.sweep-failed', { error: String(err) });
    return;
  }
  // Only this object's own: another deployment bound to the same bucket (a staging Worker, a
  // renamed one, wrangler dev) writes the same `<shard>/` keys for an object of another id.
  // An object with no stamp (put before stamps) is never provably ours: it is left alone.
  const me = q.state.id.toString();
  const mine = page.objects.filter((o) => o.customMetadata?.[OWNER] === me);
  const old = mine.filter((o) => o.uploaded.getTime() < now - ORPHAN_GRACE_MS).map((o) => o.key);
  const orphans = store.unowned(old);
  for (const k of orphans) store.noteBodyDelete(k);
  if (page.truncated) {
    store.setMeta(SWEEP_CURSOR, page.cursor);
    store.setMeta(SWEEP_AT, String(now + Math.min(SWEEP_NEXT_PAGE_MS, sweepMs)));
  } else {
    store.deleteMeta(SWEEP_CURSOR);
    store.setMeta(SWEEP_AT, String(now + sweepMs));
  }
  if (orphans.length > 0) log('bodies.orphans', { prefix, listed: page.objects.length, notOurs: page.objects.length - mine.length, orphans: orphans.length });
  await deleteBodies(q);
}
