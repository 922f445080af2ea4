// Retry policy as pure functions: what an ack does to a message (a RetryDecision), when a
// deferred message is tried again, when it gives up. No storage, no clock of
// its own, so tap covers it directly.
import type { RecipientResult } from '../protocol/wire.ts';
import { mergeResults } from './owed.ts';

export interface RetryPolicy {
  /** Delay before the first retry, ms (Postfix minimal_backoff_time is 5 min). */
  firstRetryMs: number;
  /** Longest delay between retries, ms (Postfix maximal_backoff_time). */
  maxRetryMs: number;
  /** Age at which an undelivered message goes to dead-letter, ms (Postfix: 5 days). */
  maxAgeMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  firstRetryMs: 5 * 60_000,
  maxRetryMs: 60 * 60_000,
  maxAgeMs: 5 * 24 * 60 * 60_000,
};

/** Delay after the n-th failed attempt (n >= 1): doubling from firstRetryMs, capped. */
export function retryDelay(attempts: number, p: RetryPolicy): number {
  const n = Math.max(1, attempts);
  return Math.min(p.maxRetryMs, p.firstRetryMs * 2 ** Math.min(n - 1, 30));
}

/** Leases that may end without an answer (the connection closed) before a message is given up. */
export const DEFAULT_MAX_UNSETTLED_LEASES = 5;
/** How long a bounced message stays visible after its DSN went out (like the 5-day queue). */
export const DEFAULT_RETENTION_MS = 5 * 24 * 60 * 60_000;

/**
 * When a message whose lease ended unanswered for the n-th time in a row may be leased again:
 * the first time at once (an agent restart should not delay mail), then 2 s doubling to 5 min,
 * so a message that breaks every connection it is sent on cannot make a tight loop.
 */
export function releaseDelay(leaseEnds: number): number {
  return leaseEnds <= 1 ? 0 : Math.min(5 * 60_000, 1000 * 2 ** Math.min(leaseEnds - 1, 20));
}

/** Next try of a bounce that could not be sent: after a delay equal to its age, within the retry bounds (Postfix). */
export function bounceRetryAt(settledAt: number, now: number, p: RetryPolicy): number {
  return now + Math.min(p.maxRetryMs, Math.max(p.firstRetryMs, now - settledAt));
}

/**
 * Where a message that failed for good goes: a bounce to its sender, or dead-letter with the
 * reason none is sent. Never a bounce to the null sender (that would bounce a bounce).
 */
export function failedTo(sender: string, agentsBounce: boolean): { state: 'bouncing' } | { state: 'dead-letter'; why: string } {
  if (sender === '') return { state: 'dead-letter', why: 'no bounce: the sender is the null sender <>' };
  if (!agentsBounce) return { state: 'dead-letter', why: 'no bounce: the agent has no bounce relay configured' };
  return { state: 'bouncing' };
}

export type RetryDecision =
  | { kind: 'done'; results: RecipientResult[] }
  | { kind: 'deferred'; results: RecipientResult[]; pending: string[]; nextAttemptAt: number }
  | { kind: 'expired'; results: RecipientResult[]; pending: string[] };

/**
 * Folds one attempt's results into a message. Delivered and permanently failed
 * recipients are final; temporarily failed ones stay pending and only they are
 * tried again. `earlier` are final results of previous attempts.
 */
export function settle(
  earlier: RecipientResult[],
  attempt: RecipientResult[],
  since: number,  // start of the retry clock: arrival, or the last dead-letter replay
  attempts: number,
  now: number,
  policy: RetryPolicy,
): RetryDecision {
  const final = attempt.filter((r) => r.outcome !== 'tempfail');
  const pending = attempt.filter((r) => r.outcome === 'tempfail').map((r) => r.recipient);
  const results = mergeResults(earlier, final);
  if (pending.length === 0) return { kind: 'done', results };
  const lastTempfail = attempt.filter((r) => r.outcome === 'tempfail');
  if (now - since >= policy.maxAgeMs) {
    return { kind: 'expired', results: mergeResults(results, lastTempfail), pending };
  }
  const nextAttemptAt = Math.min(now + retryDelay(attempts, policy), since + policy.maxAgeMs);
  return { kind: 'deferred', results, pending, nextAttemptAt };
}

/**
 * When a message still undelivered owes its sender a delay warning (Postfix delay_warning_time):
 * `delayMs` after the start of its retry clock (`since`: arrival, or the last dead-letter replay).
 * Null when none is ever owed: warnings are off (`delayMs` 0), or the sender is the null sender
 * <> (never warn a bounce). One warning per message: the caller records it once.
 */
export function delayWarningAt(sender: string, since: number, delayMs: number): number | null {
  if (delayMs <= 0 || sender === '') return null;
  return since + delayMs;
}

/** Until when a deferred message goes on being retried: the DSN's Will-Retry-Until. */
export function retryUntil(since: number, p: RetryPolicy): number {
  return since + p.maxAgeMs;
}
