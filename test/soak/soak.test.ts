// The fast soak in `npm test`: a few dozen messages while every kind of fault is injected once.
// `npm run soak` runs the long one (test/soak/main.ts).
import t from 'tap';
import { dovecotSkip } from '../fixtures/dovecot.ts';
import { formatSummary, runSoak } from './soak.ts';

t.test('nothing lost, nothing doubled, nothing mangled under faults', { skip: dovecotSkip(), timeout: 240_000 }, async (t) => {
  const seed = Number(process.env.SOAK_SEED ?? 7);
  const s = await runSoak({ messages: 40, seed, maxBytes: 256 * 1024, faultEveryMs: 1000, faultOrder: 'cycle', senders: 4, timeLimitMs: 180_000, log: (l) => t.comment(l) });
  t.comment(`\n${formatSummary(s)}`);
  t.equal(s.accepted + s.refused, s.sent, 'every message answered');
  t.ok(s.accepted > 0, 'some accepted');
  t.equal(s.lost, 0, 'lost');
  t.equal(s.duplicates, 0, 'duplicates');
  t.equal(s.byteMismatches, 0, 'byte mismatches');
  t.equal(s.strays, 0, 'strays');
  t.equal(s.unknownUnaccounted, 0, 'every unknown recipient refused or journaled as permfail');
  t.equal(Object.keys(s.faults).length, 7, `every kind of fault was injected: ${Object.keys(s.faults).join(', ')}`);
  t.equal(s.ok, true);
});
