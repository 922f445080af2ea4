// The object->agent fuzzer's backoff check: after each session the agent closed or lost, the
// next welcome comes no sooner than the wait the agent announced (session.closed's retryInMs).
// Both times come from one high-resolution clock: with Date.now()'s whole milliseconds, a
// session closed in the millisecond of its own welcome looked like a reconnect after 0 ms
// (seed 3, issue #22).

/** A session.closed line of the agent, stamped on the fuzzer's clock when it was logged. */
export interface ClosedAt { at: number; retryInMs: number }

export interface ShortGap { closedAt: number; retryInMs: number; gapMs: number }

/**
 * The closes whose next welcome (the first strictly after the close: a session's own welcome
 * always came before its close) came sooner than the announced wait, less `slackMs` for a
 * timer that fires a little early.
 */
export function shortReconnects(closes: readonly ClosedAt[], welcomes: readonly number[], slackMs = 2): ShortGap[] {
  const sorted = [...welcomes].sort((a, b) => a - b);
  return closes.flatMap((c) => {
    const again = sorted.find((w) => w > c.at);
    if (again === undefined || again - c.at >= c.retryInMs - slackMs) return [];
    return [{ closedAt: c.at, retryInMs: c.retryInMs, gapMs: again - c.at }];
  });
}
