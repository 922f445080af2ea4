// The journal forgets entries after the retention window, and not before: pruned
// periodically while the agent runs (not only at start), on a clock the test moves.
import t from 'tap';
import { DAY_MS } from '../../edge-agent/delivery/journal.ts';
import { inProcess, metric, until } from './in-process.ts';
import { header, msgId, push } from './scripted-object.ts';

t.test('journal entries are pruned periodically once older than the retention window', async (t) => {
  const { object, agent, named, peer } = await inProcess(t);
  let clock = Date.UTC(2026, 0, 1);
  const conn = object.connection();
  const a = agent({}, { now: () => clock, pruneEveryMs: 20, journalRetentionMs: 7 * DAY_MS });
  const c = await conn;
  const entries = () => metric(a.metrics.render(), 'mailbridge_agent_journal_entries');

  const body = Buffer.from('Subject: old\r\n\r\nold news\r\n', 'latin1');
  const h = header(msgId(9), body, ['alice@example.test']);
  push(c, h, body);
  await c.next('ack');
  t.equal(entries(), 1, 'journaled');

  clock += 7 * DAY_MS - 1;  // just inside the window: kept through many prune rounds
  await new Promise((r) => setTimeout(r, 300));
  t.equal(entries(), 1, 'kept within the window');
  t.same(named('journal.pruned'), []);

  clock += 2;  // past it
  await until('the entry pruned', () => entries() === 0);
  t.match(named('journal.pruned'), [{ removed: 1, entries: 0 }]);
  t.equal(metric(a.metrics.render(), 'mailbridge_agent_journal_pruned_total'), 1);

  // Forgotten for good: a redelivery now would be delivered again, which is why the window
  // must outlast the queue's redelivery horizon (MAX_AGE_MS, 5 days by default).
  push(c, { ...h, attempt: 2 }, body);
  await c.next('ack');
  t.equal(peer.stored.length, 2);
  t.equal(named('deliver.journal').length, 0);
});
