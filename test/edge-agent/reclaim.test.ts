// reclaim.ts: a full collection after every RECLAIM_BYTES of message data, when the
// process has gc() (--expose-gc); nothing otherwise.
import t from 'tap';

t.test('collects once per RECLAIM_BYTES relayed', async (t) => {
  let calls = 0;
  (globalThis as { gc?: () => void }).gc = () => { calls++; };
  const { RECLAIM_BYTES, reclaiming, relayed } = await import('../../edge-agent/session/reclaim.ts');
  t.equal(reclaiming, true);
  relayed(RECLAIM_BYTES - 1);
  t.equal(calls, 0, 'not before RECLAIM_BYTES');
  relayed(1);
  t.equal(calls, 1, 'at RECLAIM_BYTES');
  for (let i = 0; i < 64; i++) relayed(RECLAIM_BYTES / 16);
  t.equal(calls, 5, 'then once per RECLAIM_BYTES');
});
