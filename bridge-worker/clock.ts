// The queue's clock: Date.now(), except in tests that set it (test/model/), so retry, expiry
// and retention times can be reached without waiting. Only possible where the TEST_CLOCK var
// is present, which no wrangler file sets (test/bridge-worker/deploy.test.ts checks): in
// production now() is Date.now() and realTime() the identity.

/** A test's fixed time, ms since the epoch; null: the real clock. */
let fixed: number | null = null;

export function now(): number {
  return fixed ?? Date.now();
}

/** The runtime's time for queue time `t`: alarms are armed on the runtime's own clock. */
export function realTime(t: number): number {
  return fixed === null ? t : Date.now() + (t - fixed);
}

/** Fixes the clock at `t` (null: back to the real one). Throws unless the env has TEST_CLOCK. */
export function setTestClock(env: { TEST_CLOCK?: string }, t: number | null): void {
  if (env.TEST_CLOCK === undefined) throw new Error('the clock can be set only in tests (TEST_CLOCK)');
  fixed = t;
}
