// owed.ts: one result per recipient, what a replay owes, exact durations.
import t from 'tap';
import { exactDuration, mergeResults, owedOnReplay } from '../../bridge-worker/owed.ts';
import type { RecipientResult } from '../../protocol/wire.ts';

const r = (recipient: string, enhanced: string, outcome: RecipientResult['outcome']): RecipientResult =>
  ({ recipient, code: outcome === 'delivered' ? 250 : outcome === 'tempfail' ? 452 : 550, enhanced, text: 'x', outcome });

t.test('mergeResults: the newest per recipient, first-seen order', async (t) => {
  const merged = mergeResults([r('a', '2.0.0', 'delivered'), r('d', '4.4.2', 'tempfail')], [r('d', '5.1.1', 'permfail'), r('e', '5.1.1', 'permfail')]);
  t.same(merged.map((x) => [x.recipient, x.enhanced]), [['a', '2.0.0'], ['d', '5.1.1'], ['e', '5.1.1']]);
});

t.test('owedOnReplay: every recipient not delivered, only delivered results kept', async (t) => {
  t.same(owedOnReplay([], [r('a', '2.0.0', 'delivered'), r('d', '5.1.1', 'permfail')]), { recipients: ['d'], results: [r('a', '2.0.0', 'delivered')] });
  t.same(owedOnReplay(['e'], [r('e', '4.4.2', 'tempfail'), r('d', '5.1.1', 'permfail')]).recipients, ['e', 'd']);
  t.same(owedOnReplay([], [r('a', '2.0.0', 'delivered')]).recipients, [], 'nothing owed: nothing to replay');
});

t.test('exactDuration: the largest unit that divides it', async (t) => {
  t.equal(exactDuration(5 * 86_400_000), '5 d');
  t.equal(exactDuration(90 * 60_000), '90 min');
  t.equal(exactDuration(2 * 3_600_000), '2 h');
  t.equal(exactDuration(45_000), '45 s');
  t.equal(exactDuration(1500), '1500 ms');
});
