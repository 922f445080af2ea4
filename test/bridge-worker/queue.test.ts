import t from 'tap';
import { DEFAULT_RETRY, retryDelay, settle } from '../../bridge-worker/queue.ts';
import type { RecipientResult } from '../../protocol/wire.ts';

const res = (recipient: string, outcome: RecipientResult['outcome'], code = 250): RecipientResult =>
  ({ recipient, code, enhanced: null, text: '', outcome });
const MIN = 60_000;

t.test('backoff doubles from 5 minutes and is capped at 1 hour', async (t) => {
  t.same([1, 2, 3, 4, 5, 9].map((n) => retryDelay(n, DEFAULT_RETRY) / MIN), [5, 10, 20, 40, 60, 60]);
});

t.test('delivered and permanent failures are final; only tempfails stay pending', async (t) => {
  const s = settle([], [res('a', 'delivered'), res('b', 'permfail', 550), res('c', 'tempfail', 451)], 0, 1, 1000, DEFAULT_RETRY);
  t.equal(s.kind, 'deferred');
  if (s.kind !== 'deferred') return;
  t.same(s.pending, ['c']);
  t.same(s.results.map((r) => r.recipient), ['a', 'b']);
  t.equal(s.nextAttemptAt, 1000 + 5 * MIN);
  const done = settle(s.results, [res('c', 'delivered')], 0, 2, 2000, DEFAULT_RETRY);
  t.equal(done.kind, 'done');
  t.same(done.results.map((r) => r.recipient), ['a', 'b', 'c']);
});

t.test('a message older than 5 days goes to dead-letter instead of deferring', async (t) => {
  const s = settle([], [res('a', 'tempfail', 452)], 0, 40, DEFAULT_RETRY.maxAgeMs, DEFAULT_RETRY);
  t.equal(s.kind, 'dead-letter');
  const near = settle([], [res('a', 'tempfail', 452)], 0, 40, DEFAULT_RETRY.maxAgeMs - 1000, DEFAULT_RETRY);
  t.equal(near.kind, 'deferred');
  if (near.kind === 'deferred') t.equal(near.nextAttemptAt, DEFAULT_RETRY.maxAgeMs, 'the last retry is at the expiry time, not past it');
});
