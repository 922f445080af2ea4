// The fast soak in `npm test`: a few dozen messages while every kind of fault is injected once
// and the operator acts; it fails when any recipient of an accepted message is neither
// delivered, refused, bounced, dead-lettered nor deleted by the operator.
// `npm run soak` runs the long one (test/soak/main.ts).
import t from 'tap';
import { dovecotSkip } from '../helpers/skip.ts';
import { formatSummary, runSoak, summaryLine } from './soak.ts';

t.test('nothing lost, nothing doubled, nothing mangled under faults; every recipient accounted for', { skip: dovecotSkip(), timeout: 240_000 }, async (t) => {
  const seed = Number(process.env.SOAK_SEED ?? 7);
  // The operator every 250 ms on average: at every 500 (the default) a run once drew only refusals (CI).
  const s = await runSoak({ messages: 40, seed, maxBytes: 256 * 1024, faultEveryMs: 1000, operatorEveryMs: 250, faultOrder: 'cycle', senders: 4, timeLimitMs: 180_000, log: (l) => t.comment(l) });
  t.comment(`\n${formatSummary(s)}`);
  t.equal(s.accepted + s.refused, s.sent, 'every message answered');
  t.ok(s.accepted > 0, 'some accepted');
  t.equal(s.delivered + s.refusedAtSmtp + s.bounced + s.deadLettered + s.deletedByOperator + s.held + s.lost, s.recipients, 'each recipient in exactly one outcome');
  t.equal(s.lost, 0, 'lost: accepted, then in no mailbox, no DSN and not dead-lettered');
  t.equal(s.duplicates, 0, 'unexplained duplicate deliveries');
  t.equal(s.bounceDuplicates, 0, 'unexplained duplicate bounces');
  t.equal(s.badBounces, 0, 'every DSN from <> to the envelope sender, naming the recipient and quoting the Message-ID');
  t.equal(s.byteMismatches, 0, 'byte mismatches');
  t.equal(s.strays, 0, 'strays');
  t.equal(s.unsettled, 0, 'the queue settled');
  // Both ways an unknown recipient is answered, and <> never bounced.
  t.ok(s.refusedAtSmtp > 0, `some refused at SMTP (${s.refusedAtSmtp})`);
  t.ok(s.bounced > 0, `some accepted, then bounced (${s.bounced})`);
  t.ok(s.nullSenderDeadLettered > 0, `mail from <> to an unknown user dead-lettered (${s.nullSenderDeadLettered})`);
  t.equal(Object.keys(s.faults).length, 11, `every kind of fault was injected: ${Object.keys(s.faults).join(', ')}`);
  t.ok(s.r2.putsFailed > 0 && s.refusedTemporarily > 0, `R2 puts failed (${s.r2.putsFailed}), answered 4xx (${s.refusedTemporarily}) and sent again`);
  t.ok(s.r2.getsFailed + s.r2.getsCut > 0 && s.bodyNacks > 0, `R2 gets failed or cut (${s.r2.getsFailed}, ${s.r2.getsCut}): the agent nacked (${s.bodyNacks}) and got it again`);
  t.equal(s.held, 0, 'nothing left on hold');
  t.equal(s.givenUp, 0, 'nothing dead-lettered whose sender could be told');
  t.equal(s.deletedYetDelivered, 0, 'nothing the operator deleted was delivered');
  const acted = Object.values(s.operator);
  t.ok(acted.reduce((n, c) => n + c.done, 0) > 0, `the operator acted: ${JSON.stringify(s.operator)}`);
  t.ok(acted.reduce((n, c) => n + c.refused, 0) > 0, 'and was refused clearly on messages in the wrong state');
  t.equal(s.ok, true, summaryLine(s));
});
