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

/** What of the object's storage the test clock needs (a Durable Object's storage has it). */
interface ClockStorage {
  get<T>(key: string): Promise<T | undefined>;
  put(key: string, value: unknown): Promise<void>;
}
const KEY = 'test-clock';

/**
 * Tests only: fixes the clock at `t` and keeps it in the object's storage, so that an object
 * started again (a restart, an eviction) reads it in its constructor. Without this, an alarm
 * that starts the object before the test sets the clock again would run on the real time.
 */
export async function keepTestClock(env: { TEST_CLOCK?: string }, storage: ClockStorage, t: number | null): Promise<void> {
  setTestClock(env, t);
  await storage.put(KEY, t);
}

/**
 * Tests only: in the constructor, the clock a test fixed before the object last stopped. The
 * clock is one per isolate, and every object of it keeps the value it was last told: tests
 * only move the clock forward, so the latest of them wins, whichever object starts first (an
 * older value, from a shard no longer in use, must not set the clock back: model seed 7000).
 */
export async function restoreTestClock(env: { TEST_CLOCK?: string }, storage: ClockStorage): Promise<void> {
  if (env.TEST_CLOCK === undefined) return;
  const t = await storage.get<number | null>(KEY);
  if (typeof t === 'number' && (fixed === null || t > fixed)) setTestClock(env, t);
}
