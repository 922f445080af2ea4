// The queue's states, the admin API's message shape and its limits: one definition for
// the queue object (bridge-worker/) and relayctl, so the two cannot drift apart.
import type { FailureReason, RecipientResult } from './wire.ts';

/**
 * incoming: being stored, not yet visible; queued: waits for an agent; in-flight: leased to
 * an agent connection; deferred: waits for its next attempt; bouncing: failed for good, a
 * delivery status notification to its sender is owed; bounced: that DSN was sent (kept for the
 * retention period, then removed); dead-letter: failed and the sender could not be told (no
 * bounce relay, null sender, relay refused): kept until an operator replays or purges it;
 * hold: put aside by an operator (postsuper -h): never leased, retried or expired until released.
 */
export const STATES = ['incoming', 'queued', 'in-flight', 'deferred', 'hold', 'bouncing', 'bounced', 'dead-letter'] as const;
export type State = (typeof STATES)[number];

/** Largest page the admin API lists at once. */
export const MAX_LIST = 500;

/** A message as the admin API shows it (GET /admin/messages, /admin/messages/<id>). */
export interface QueueMessage {
  id: string;
  state: State;
  /** Envelope sender; '' is the null sender <>. */
  sender: string;
  /** Recipients still pending (not yet delivered or permanently failed). */
  recipients: string[];
  /** Final per-recipient replies so far (with the last tempfails, once failed). */
  results: RecipientResult[];
  /** Every stored byte, Cloudflare's block included. */
  size: number;
  /** Of the bytes after `prefix`, Cloudflare's block (0 for none). */
  sha256: string;
  prefix: number;
  /** Chunk rows holding the bytes in the object (0 for a body in R2). */
  chunks: number;
  /** The R2 object holding the bytes after `prefix`; null: they are in the object's chunks. */
  bodyKey: string | null;
  /** R2's MD5 of that object (then `sha256` is ''); null for a message in chunks. */
  md5: string | null;
  receivedAt: number;
  /** Start of the retry clock: receivedAt, or the time of a dead-letter replay. */
  retryFrom: number;
  attempts: number;
  nextAttemptAt: number | null;
  leaseSession: string | null;
  lastError: string | null;
  /** Why it failed for good (bouncing, bounced, dead-letter). */
  failure: FailureReason | null;
  /** What became of its bounce: the relay's reply, or why none could be sent. */
  bounceStatus: string | null;
  /** When it reached bouncing, bounced or dead-letter. */
  settledAt: number | null;
}
