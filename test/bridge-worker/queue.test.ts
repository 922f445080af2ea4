import t from 'tap';
import { bounceRetryAt, DEFAULT_RETRY, delayWarningAt, failedTo, releaseDelay, retryDelay, retryUntil, settle } from '../../bridge-worker/retry-policy.ts';
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

t.test('a message older than 5 days fails (expired) instead of deferring', async (t) => {
  const s = settle([], [res('a', 'tempfail', 452)], 0, 40, DEFAULT_RETRY.maxAgeMs, DEFAULT_RETRY);
  t.equal(s.kind, 'expired');
  const near = settle([], [res('a', 'tempfail', 452)], 0, 40, DEFAULT_RETRY.maxAgeMs - 1000, DEFAULT_RETRY);
  t.equal(near.kind, 'deferred');
  if (near.kind === 'deferred') t.equal(near.nextAttemptAt, DEFAULT_RETRY.maxAgeMs, 'the last retry is at the expiry time, not past it');
});

t.test('a message whose lease keeps ending unanswered is spaced out, not redelivered in a loop', async (t) => {
  t.equal(releaseDelay(1), 0, 'the first release (an agent restart) is offered again at once');
  t.same([2, 3, 4, 5].map(releaseDelay), [2000, 4000, 8000, 16000], 'then 2 s, doubling');
  t.equal(releaseDelay(40), 5 * MIN, 'capped at 5 minutes');
});

t.test('a failed message bounces to its sender, never to the null sender, and without a relay goes to dead-letter', async (t) => {
  t.same(failedTo('s@example.net', true), { state: 'bouncing' });
  t.match(failedTo('', true), { state: 'dead-letter', why: /null sender/ });
  t.match(failedTo('s@example.net', false), { state: 'dead-letter', why: /no bounce relay/ });
});

t.test('a bounce that could not go out is tried again after its age, within the retry bounds', async (t) => {
  t.equal(bounceRetryAt(0, 1000, DEFAULT_RETRY), 1000 + 5 * MIN, 'at least the first retry delay');
  t.equal(bounceRetryAt(0, 20 * MIN, DEFAULT_RETRY), 40 * MIN, 'a delay equal to its age');
  t.equal(bounceRetryAt(0, 600 * MIN, DEFAULT_RETRY), 660 * MIN, 'at most the longest retry gap');
});

t.test('a delay warning is owed DELAY_WARNING_MS after the retry clock starts: never when off, never to <>', async (t) => {
  const H = 60 * MIN;
  t.equal(delayWarningAt('s@example.net', 1000, 4 * H), 1000 + 4 * H, 'arrival (or the last replay) + the delay');
  t.equal(delayWarningAt('s@example.net', 1000, 0), null, 'DELAY_WARNING_MS unset or 0: off');
  t.equal(delayWarningAt('', 1000, 4 * H), null, 'never warn the null sender: a warning about a bounce');
  t.equal(retryUntil(1000, DEFAULT_RETRY), 1000 + 5 * 24 * H, 'Will-Retry-Until: the retry clock + MAX_AGE_MS');
});
