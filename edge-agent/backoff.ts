// How long the agent waits before it knocks at the queue object again. Every close and every
// failed attempt is followed by a wait, doubling from about 1 s to maxReconnectMs, with
// jitter so that shards (and agents) restarted together do not knock in step. Issue #16: an
// agent that reconnected at once after each close spun forever when the object closed every
// session right after welcome (1008 on an ack it refused, then the same message again).
// Not p-retry: it retries a call that fails, and here a session that came up and then closed
// early must count as a failure too, which its schedule cannot express.
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A session up at least this long proved the path and the object healthy: the next wait
 * starts over from the first one. A shorter one counts as a failed attempt, and so does one
 * the object closed with 1008 (it refused a frame of ours), however long it ran. Acks do not
 * prove it: the object confirms none, and in #16 every session sent one before its 1008.
 */
export const HEALTHY_SESSION_MS = 30_000;
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
