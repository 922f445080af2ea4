// The operator's operations on one shard (Postfix's showq and postsuper), as functions over the
// store: what the Worker's /admin routes (admin.ts) ask the object for. Each logs what it did;
// relay-do.ts pumps and sets the alarm after those that make work, and deletes freed bodies.
import type { ShardSummary } from '../protocol/admin.ts';
import { bouncesSent } from './bounce-tasks.ts';
import { now as clock } from './clock.ts';
import { connectedAgents } from './connections.ts';
import { headerSection } from './headers.ts';
import { log, randomId } from './log.ts';
import { owedOnReplay } from './owed.ts';
import type { QueueContext } from './queue-context.ts';
import type { MessageRow, MessageStore } from './store.ts';

/** One shard's part of GET /admin/queue (protocol/admin.ts); `oldest`: of the messages still owed (store.oldestOwed). */
export function shardSummary(q: QueueContext): ShardSummary {
  const store = q.store;
  return {
    states: store.counts(), agents: connectedAgents(q), oldest: store.oldestOwed(),
    oldestByState: store.oldestByState(), bouncesSent: bouncesSent(store),
    stored: store.stored(), objectBytes: q.state.storage.sql.databaseSize,
  };
}

/** One message and the raw bytes of its header section (at most 64 KiB), for display. */
export function showMessage(store: MessageStore, id: string): { message: MessageRow; header: Uint8Array } | null {
  const message = store.get(id);
  if (!message || message.state === 'incoming') return null;
  return { message, header: headerSection(store.head(id)) };
}

/**
 * What GET /admin/messages/<id>/raw needs before streaming: size, hash, chunk count; for a
 * body in R2, its key, MD5 and the block that goes before it.
 */
export function rawOf(store: MessageStore, id: string): {
  size: number; sha256: string; prefix: number; chunks: number; r2: { key: string; md5: string; block: Uint8Array } | null;
} | null {
  const message = store.get(id);
  if (!message || message.state === 'incoming') return null;
  const r2 = message.bodyKey !== null
    ? { key: message.bodyKey, md5: message.md5 ?? '', block: store.head(id).slice(0, message.prefix) }
    : null;
  return { size: message.size, sha256: message.sha256, prefix: message.prefix, chunks: message.chunks, r2 };
}

/** One stored chunk, fetched per read so an export holds one chunk in memory; null once the message is gone. */
export function chunkOf(store: MessageStore, id: string, seq: number): Uint8Array | null {
  const message = store.get(id);
  if (!message || message.state === 'incoming' || !Number.isInteger(seq) || seq < 0 || seq >= message.chunks) return null;
  return store.chunk(id, seq);
}

/** deferred -> queued now. */
export function retry(store: MessageStore, id: string): boolean {
  if (!store.retryNow(id)) return false;
  log('admin.retry', { id });
  return true;
}

/** dead-letter -> queued under a new id (store.replay), owing the recipients not yet delivered; 'nothing-owed' when every one was. */
export function replay(store: MessageStore, id: string): { id: string } | 'nothing-owed' | false {
  const msg = store.get(id);
  if (!msg || msg.state !== 'dead-letter') return false;
  const owed = owedOnReplay(msg.recipients, msg.results);
  if (owed.recipients.length === 0) return 'nothing-owed';
  const as = randomId();
  if (!store.replay(id, as, clock(), owed.recipients, owed.results)) return false;
  log('admin.replay', { id, as, recipients: owed.recipients.length });
  return { id: as };
}

/** Puts a queued or deferred message on hold (postsuper -h). */
export function hold(store: MessageStore, id: string): boolean {
  if (!store.hold(id)) return false;
  log('admin.hold', { id });
  return true;
}

/** Releases a held message (postsuper -H): the next agent gets it at once. */
export function release(store: MessageStore, id: string): boolean {
  if (!store.release(id)) return false;
  log('admin.release', { id });
  return true;
}

/**
 * Deletes a message from the live queue (postsuper -d): the operator's explicit decision,
 * logged with its envelope. Not one an agent holds now (in-flight, or a bounce being sent):
 * its delivery may be under way.
 */
export function deleteMessage(store: MessageStore, id: string): boolean {
  const msg = store.get(id);
  if (!msg || msg.state === 'incoming' || msg.state === 'in-flight' || msg.leaseSession !== null) return false;
  store.remove(id);
  log('admin.delete', { id, state: msg.state, sender: msg.sender, recipients: msg.recipients });
  return true;
}

/** Every deferred message is due now (postqueue -f). Returns how many. */
export function flush(store: MessageStore): number {
  const woken = store.wakeAllDeferred();
  log('admin.flush', { woken });
  return woken;
}

/** Deletes a dead-lettered or bounced message for good. Live mail is never purged. */
export function purge(store: MessageStore, id: string): boolean {
  const msg = store.get(id);
  if (!msg || (msg.state !== 'dead-letter' && msg.state !== 'bounced')) return false;
  store.remove(id);
  log('admin.purge', { id, sender: msg.sender, recipients: msg.recipients.length });
  return true;
}
