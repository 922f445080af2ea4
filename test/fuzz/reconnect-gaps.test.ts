// The fuzzer's backoff check counts a reconnect as too soon only when it was (issue #22: seed 3
// reported "1 reconnects sooner than the backoff allows" for a session closed in the millisecond
// of its own welcome; its next welcome came 76 ms later, after a wait of 74 ms).
import t from 'tap';
import { shortReconnects } from './reconnect-gaps.ts';

t.test('a session closed in the instant of its own welcome is not a reconnect (seed 3\'s sequence)', async (t) => {
  // Date.now() stamps from the failing run, relative to the close: welcomes at -437, 0 (its own), 76.
  const welcomes = [-1980, -1093, -437, 0, 76, 628];
  t.same(shortReconnects([{ at: 0, retryInMs: 74 }], welcomes), []);
  // On the high-resolution clock its own welcome is strictly before the close.
  t.same(shortReconnects([{ at: 0.4, retryInMs: 74 }], [-437, 0.1, 76.2]), []);
});

t.test('a reconnect sooner than the announced wait is found', async (t) => {
  t.same(shortReconnects([{ at: 100, retryInMs: 74 }], [0, 130, 500]), [{ closedAt: 100, retryInMs: 74, gapMs: 30 }]);
  // Against the wait the agent announced, not only the smallest one the backoff allows.
  t.same(shortReconnects([{ at: 100, retryInMs: 90 }], [180]), [{ closedAt: 100, retryInMs: 90, gapMs: 80 }]);
  t.same(shortReconnects([{ at: 100, retryInMs: 90 }], [189]), [], 'a timer 1 ms early is within the slack');
  t.same(shortReconnects([{ at: 100, retryInMs: 90 }], []), [], 'no next session: nothing to check');
});
