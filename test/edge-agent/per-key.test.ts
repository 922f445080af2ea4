// One task per key at a time: a redelivered message (or bounce) waits for the run still
// working on it, so the journal, not a second delivery, answers it.
import t from 'tap';
import { PerKey } from '../../edge-agent/delivery/per-key.ts';

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 5));

t.test('the same key waits for the earlier task; another key does not; a failure does not block', async (t) => {
  const q = new PerKey<string>();
  const order: string[] = [];
  let release = (): void => {};
  const gate = new Promise<void>((r) => { release = r; });
  let waited = 0;
  const first = q.run('a', async () => { order.push('a1 start'); await gate; order.push('a1 end'); return 'a1'; });
  const second = q.run('a', async () => { order.push('a2'); return 'a2'; }, () => { waited++; });
  const other = q.run('b', async () => { order.push('b'); return 'b'; });
  await tick();
  t.same(order, ['a1 start', 'b'], 'b ran at once; a2 waits');
  t.equal(q.size, 1, 'b has ended; a counts once, the waiting run in place of the first');
  release();
  t.same(await Promise.all([first, second, other]), ['a1', 'a2', 'b']);
  t.same(order, ['a1 start', 'b', 'a1 end', 'a2']);
  t.equal(waited, 1);
  t.equal(q.size, 0);
  const failed = q.run('c', async () => { throw new Error('boom'); });
  const after = q.run('c', async () => 'c2');
  await t.rejects(failed, /boom/);
  t.equal(await after, 'c2', 'an earlier failure does not stop the next');
});
