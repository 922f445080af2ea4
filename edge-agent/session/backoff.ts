// How long the agent waits before it knocks at the queue object again. Every close and every
// failed attempt is followed by a wait, doubling from about 1 s to maxReconnectMs, with
// jitter so that shards (and agents) restarted together do not knock in step. Issue #16: an
// agent that reconnected at once after each close spun forever when the object closed every
// session right after welcome (1008 on an ack it refused, then the same message again).
// Not p-retry: it retries a call that fails, and here a session that came up and then closed
// early must count as a failure too, which its schedule cannot express.
import { setTimeout as sleep } from 'node:timers/promises';

/** A session up at least this long, and not refused by the object, proved the path and the object healthy. */
export const HEALTHY_SESSION_MS = 30_000;

/** How a session ended, as far as the backoff cares. */
export interface SessionSummary {
  upMs: number;
  /** The object closed it with 1008: it refused a frame of ours. */
  refusedByObject: boolean;
  /** Messages acked on it. */
  acks: number;
}

/**
 * Whether the next wait starts over from the first one. A session the object closed because it
 * refused a frame of ours never does, however long it ran and whatever it acked: the next may
 * well end the same way (issue #16: every session acked, then got its 1008 on the same message
 * again). Any other session does when it did work (an ack went out and the object did not
 * refuse it) or was up HEALTHY_SESSION_MS: a session the agent closed over the object's frame,
 * the network dropped or the heartbeat lost is no failure of the path when mail flowed on it
 * (issue #22: while one message's frame was refused, the wait only grew and nothing was delivered).
 */
export function resetsBackoff(s: SessionSummary): boolean {
  if (s.refusedByObject) return false;
  return s.acks > 0 || s.upMs >= HEALTHY_SESSION_MS;
}

/** The first wait is between half this and this. */
const FIRST_WAIT_MS = 2_000;

/** The wait after `attempts` failed attempts in a row (1 or more): half of it is random. */
export function backoffMs(attempts: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, FIRST_WAIT_MS * 2 ** Math.min(attempts - 1, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** Waits `ms`, or less when `signal` aborts: stopping never waits out a backoff. */
export async function pause(ms: number, signal: AbortSignal): Promise<void> {
  await sleep(ms, undefined, { signal }).catch(() => undefined);
}
