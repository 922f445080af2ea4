// The queue's states and the admin API's limits: one definition for the queue
// object (bridge-worker/) and relayctl, so the two cannot drift apart.

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
