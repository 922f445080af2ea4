// Settling an attempt (Postfix's qmgr on a delivery's status): the agent's ack or nack, or an
// answer the object cannot accept, becomes done, deferred (with backoff) or failed; a failed
// message owes a bounce or goes to dead-letter. Expiry by age and leases that end unanswered
// too often fail messages the same way.
import { MAX_RESULT_TEXT, ackCovers, type AckFrame, type FailureReason, type NackFrame, type RecipientResult } from '../protocol/wire.ts';
import { agentsBounce, bounceLater, oweWarning, warningLater } from './bounce-tasks.ts';
import { now as clock } from './clock.ts';
import { readConfig } from './env.ts';
import { log } from './log.ts';
import { exactDuration, mergeResults } from './owed.ts';
import { failedTo, settle } from './retry-policy.ts';
import { retryPolicy, type Attachment, type QueueContext } from './queue-context.ts';
import type { MessageRow } from './store.ts';
import { rejectReason } from './smtp-verdict.ts';

/** An ack the protocol allows (not before the message's end: the caller checks that). */
export function onAck(q: QueueContext, a: Attachment, frame: AckFrame): void {
  const msg = q.store.get(frame.id);
  if (!msg || msg.state !== 'in-flight' || msg.leaseSession !== a.session) {
    // Unknown, already settled, or leased elsewhere: acks are idempotent, ignore.
    log('ack.ignored', { session: a.session, id: frame.id, state: msg?.state ?? null });
    return;
  }
  if (!ackCovers(frame.results, msg.recipients)) {
    rejectAnswer(q, a, msg.id, 'the agent\'s ack does not answer each recipient exactly once');
    return;
  }
  settleAttempt(q, msg, frame.results, tempfailText(frame));
}

export function onNack(q: QueueContext, a: Attachment, frame: NackFrame): void {
  const msg = q.store.get(frame.id);
  if (!msg || msg.state !== 'in-flight' || msg.leaseSession !== a.session) {
    log('nack.ignored', { session: a.session, id: frame.id });
    return;
  }
  // The agent stops reading this message's chunks; stop sending them.
  if (a.cursor?.id === frame.id) a.cursor = null;
  const error = `nack ${frame.reason}: ${frame.text}`;
  log('message.nacked', { id: msg.id, session: a.session, reason: frame.reason });
  if (frame.reason === 'shutdown') {
    // Not the message's fault: the next connection gets it at once.
    a.draining = true;
    q.store.requeue(msg.id, error);
    // Its age may have run out while it was leased: it fails now, not at the next alarm.
    expireDue(q, clock());
    q.forOthers = true;
    return;
  }
  // corrupt / unavailable may repeat (bad stored bytes, a full disk at home): retry with
  // the same backoff as a tempfail, never in a tight loop, and dead-letter after 5 days.
  const results = msg.recipients.map((recipient): RecipientResult =>
    ({ recipient, code: 0, enhanced: null, text: error.slice(0, 1000), outcome: 'tempfail' }));
  settleAttempt(q, msg, results, error);
}

/**
 * An answer about message `id` the object cannot accept: the message is deferred with the
 * reason (a tempfail of every pending recipient, with the usual backoff), the connection stays.
 * False when `id` is not a message this connection holds.
 */
export function rejectAnswer(q: QueueContext, a: Attachment, id: string, why: string): boolean {
  const msg = q.store.get(id);
  const w = q.warnings.warning(id);
  if ((!msg || msg.leaseSession !== a.session) && w && w.state === 'owed' && w.leaseSession === a.session) {
    log('agent.answer-rejected', { session: a.session, id, why, warning: true });
    warningLater(q, id, w.dueAt, why);
    return true;
  }
  if (!msg || msg.leaseSession !== a.session) return false;
  log('agent.answer-rejected', { session: a.session, id, why });
  if (msg.state === 'bouncing') {
    bounceLater(q, msg, why);
    return true;
  }
  if (msg.state !== 'in-flight') return false;
  const results = msg.recipients.map((recipient): RecipientResult =>
    ({ recipient, code: 0, enhanced: null, text: why, outcome: 'tempfail' }));
  settleAttempt(q, msg, results, why);
  return true;
}

/** Applies one attempt's per-recipient results: done, deferred or dead-letter. */
export function settleAttempt(q: QueueContext, msg: MessageRow, results: RecipientResult[], error: string): void {
  const now = clock();
  const s = settle(msg.results, results, msg.retryFrom, msg.attempts, now, retryPolicy(q));
  const outcomes = results.map((r) => r.outcome);
  switch (s.kind) {
    case 'done': {
      // A recipient refused for good: the sender heard 250 unless email() is waiting for this
      // very verdict and turns it into its SMTP reply. Otherwise the sender gets a bounce.
      const refused = s.results.some((r) => r.outcome === 'permfail');
      const told = q.verdicts.settled(msg.id, { kind: 'final', results: s.results }, now) > 0 && rejectReason(s.results) !== null;
      if (refused && !told) {
        fail(q, msg, 'refused', [], s.results, error);
        break;
      }
      // Refused and told: nothing was delivered, so its key is not remembered. A copy sent again
      // (after a 4xx for another recipient, say) must be stored and answered afresh: remembered,
      // it would get the id of this message, which is gone, and a 250 once this verdict is forgotten.
      q.store.finish(msg.id, refused ? null : q.store.dedupeKeyOf(msg.id), now);
      // The message's one info line in the object: what ingest.queued and message.leased said too.
      log('message.acked', {
        id: msg.id, attempt: msg.attempts, outcomes, size: msg.size, body: msg.bodyKey !== null ? 'r2' : 'chunks', chunks: msg.chunks,
        recipients: msg.recipients.length, session: msg.leaseSession, ageMs: now - msg.receivedAt,
      });
      break;
    }
    case 'deferred':
      q.store.defer(msg.id, s.pending, s.results, s.nextAttemptAt, error);
      log('message.deferred', { id: msg.id, attempt: msg.attempts, outcomes, nextAttemptAt: s.nextAttemptAt });
      oweWarning(q, msg, results.filter((r) => r.outcome === 'tempfail'));
      q.verdicts.settled(msg.id, { kind: 'deferred' }, now);
      break;
    case 'expired':
      fail(q, msg, 'expired', s.pending, s.results, error);
      break;
  }
}

/**
 * A message failed for good: it owes its sender a bounce (bouncing) or, when none can be
 * sent, goes to dead-letter for the operator. `results` covers every recipient: final ones
 * and, for `pending` ones, the last reason they were not delivered.
 */
function fail(q: QueueContext, msg: MessageRow, reason: FailureReason, pending: string[], results: RecipientResult[], error: string): void {
  const now = clock();
  const to = failedTo(msg.sender, agentsBounce(q));
  if (to.state === 'bouncing') q.forOthers = true;
  const why = to.state === 'dead-letter' ? to.why : null;
  q.store.fail(msg.id, to.state, reason, pending, results, error, why, now);
  // Not silent: a warning with everything an operator needs to find it (relayctl show <id>).
  log('message.failed', {
    id: msg.id, reason, state: to.state, attempt: msg.attempts, sender: msg.sender,
    failed: results.filter((r) => r.outcome !== 'delivered').map((r) => `${r.recipient} ${r.code} ${r.text.slice(0, 200)}`),
    ...(why !== null ? { why } : {}),
  });
  q.verdicts.settled(msg.id, { kind: 'dead-letter' }, now);
}

/**
 * How long after its retry clock starts a message that waits (queued, deferred) expires from
 * the alarm: MAX_AGE_MS and one minimal backoff more, the grace the pump gives the last attempt
 * that settle() schedules at the limit. The same whether or not an agent is connected, so an
 * agent that comes and goes does not move a message's end.
 */
export function expireAfterMs(q: QueueContext): number {
  const retry = retryPolicy(q);
  return retry.maxAgeMs + retry.firstRetryMs;
}

/** Fails every waiting message (queued, deferred) whose age ran out by `now`. */
export function expireDue(q: QueueContext, now: number): void {
  for (const m of q.store.owedSince(now - expireAfterMs(q))) expire(q, m);
}

/** Undelivered within MAX_AGE_MS of its retry clock: given up, its pending recipients failed with this text. */
export function expire(q: QueueContext, msg: MessageRow): void {
  const text = `delivery given up: not delivered within ${exactDuration(retryPolicy(q).maxAgeMs)}`;
  fail(q, msg, 'expired', msg.recipients, mergeResults(msg.results, unanswered(msg, text)), text);
}

/** `results` for recipients that never got a final answer: they failed with this text. */
function unanswered(msg: MessageRow, text: string): RecipientResult[] {
  const final = new Set(msg.results.map((r) => r.recipient));
  const last = (r: string): string => msg.lastError?.includes(r) ? `${text}; last error: ${msg.lastError}` : text;
  return msg.recipients.filter((r) => !final.has(r)).map((recipient): RecipientResult =>
    ({ recipient, code: 0, enhanced: null, text: last(recipient).slice(0, MAX_RESULT_TEXT), outcome: 'tempfail' }));
}

/** Messages whose lease ended unanswered too often in a row are given up: a bounce, not a loop. */
export function giveUpUnsettled(q: QueueContext, released: MessageRow[]): void {
  const max = readConfig(q.env).maxUnsettledLeases;
  for (const m of released) {
    if (m.leaseEnds < max) continue;
    const text = `delivery given up: ${m.leaseEnds} attempts in a row ended without an answer from the agent`;
    fail(q, m, 'attempts', m.recipients, [...m.results, ...unanswered(m, text)], text);
  }
}

function tempfailText(frame: AckFrame): string {
  return frame.results.filter((r) => r.outcome !== 'delivered').map((r) => `${r.recipient}: ${r.code} ${r.text}`).join('; ');
}
