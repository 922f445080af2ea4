// reclaim.ts: a minor collection after every MINOR_BYTES of message data and a full one after
// every RECLAIM_BYTES, when the process has gc() (--expose-gc); nothing otherwise.
import t from 'tap';

t.test('a minor collection per MINOR_BYTES, a full one per RECLAIM_BYTES relayed', async (t) => {
  const calls: string[] = [];
  (globalThis as { gc?: (o?: { type: string }) => void }).gc = (o) => { calls.push(o?.type ?? 'major'); };
  const { MINOR_BYTES, RECLAIM_BYTES, reclaiming, relayed } = await import('../../edge-agent/session/reclaim.ts');
  t.equal(reclaiming, true);
  t.ok(MINOR_BYTES < RECLAIM_BYTES && RECLAIM_BYTES % MINOR_BYTES === 0);
  const perFull = RECLAIM_BYTES / MINOR_BYTES;
  relayed(MINOR_BYTES - 1);
  t.same(calls, [], 'not before MINOR_BYTES');
  relayed(1);
  t.same(calls, ['minor'], 'a minor collection at MINOR_BYTES');
  calls.length = 0;
  for (let i = 0; i < perFull - 2; i++) relayed(MINOR_BYTES);
  relayed(MINOR_BYTES - 1);
  t.same(calls, Array(perFull - 2).fill('minor'), 'one minor collection per MINOR_BYTES');
  relayed(1);
  t.same(calls.at(-1), 'major', 'a full collection (not a minor one) at RECLAIM_BYTES');
  calls.length = 0;
  for (let i = 0; i < 64; i++) relayed(RECLAIM_BYTES / 16);
  t.same(calls.filter((c) => c === 'major').length, 4, 'then a full one per RECLAIM_BYTES');
  t.same(calls.filter((c) => c === 'minor').length, 4 * (perFull - 1), 'and a minor one per MINOR_BYTES in between');
});
