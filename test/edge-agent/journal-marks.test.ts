// The journal's unsettled marks (issue #23): visible at once, durable once their promise
// resolves (a new Journal on the same dir, as after kill -9, sees them), cleared by the
// recipient's final result or by unmark, and pruned with the rest.
import t from 'tap';
import { DAY_MS, Journal } from '../../edge-agent/delivery/journal.ts';

const A = 'alice@example.test';
const B = 'bob@example.test';

t.test('marked, committed, cleared by a final result or unmark, pruned', async (t) => {
  const dir = t.testdir();
  const j = new Journal(dir);
  const at = Date.UTC(2026, 11, 6);
  const marked = j.mark('m1', [A, B], at);
  t.same([...j.unsettled('m1', [A, B])], [[A, at], [B, at]], 'visible while queued');
  await marked;
  const after = new Journal(dir);
  t.same([...after.unsettled('m1', [A, B, 'carol@example.test'])], [[A, at], [B, at]], 'committed: another handle on the file sees them');
  after.close();

  await j.add('m1', [{ recipient: A, code: 250, enhanced: '2.0.0', text: 'Saved', outcome: 'delivered' }], at);
  await j.add('m1', [{ recipient: B, code: 451, enhanced: '4.3.0', text: 'later', outcome: 'tempfail' }], at);
  t.same([...j.unsettled('m1', [A, B])], [[B, at]], "A's result cleared its mark; a tempfail is not journaled and clears nothing by itself");
  const unmarked = j.unmark('m1', [B]);
  t.same([...j.unsettled('m1', [A, B])], [], 'unmarked while queued');
  await unmarked;
  t.same([...j.unsettled('m1', [A, B])], [], 'and committed');

  await j.mark('m2', [A], at);
  t.equal(j.prune(at + 7 * DAY_MS + 1), 2, 'the old mark and the old result');
  t.same([...j.unsettled('m2', [A])], []);
  j.close();
  await t.rejects(j.mark('m3', [A]), { message: 'journal closed' });
});
