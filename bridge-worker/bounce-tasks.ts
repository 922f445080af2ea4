// Bounce tasks (Postfix's bounce daemon, done by the agent): a failed message owes its sender
// one DSN, leased to an agent with a bounce relay; a deferred one may owe a delay warning. What
// the agent answers about either: sent, deferred (again later), failed, or found delivered.
import { MAX_RESULT_TEXT, ackCovers, type BouncedFrame, type RecipientResult } from '../protocol/wire.ts';
import { now as clock } from './clock.ts';
import { readConfig } from './env.ts';
import { bounceHeaders as dsnHeaders, headerSection } from './headers.ts';
import { log } from './log.ts';
import { exactDuration, mergeResults } from './owed.ts';
import { bounceRetryAt, delayWarningAt } from './retry-policy.ts';
import { retryPolicy, type Attachment, type QueueContext } from './queue-context.ts';
import type { MessageRow, MessageStore } from './store.ts';

/** meta key: whether the last agent that said hello can send bounces ('1') or not ('0'). */
const AGENTS_BOUNCE = 'agents_bounce';
/** meta key: bounces (DSNs) sent since the object was created, for the metrics (GET /admin/queue). */
const BOUNCES_SENT = 'bounces_sent';

/** Whether the last agent that said hello can send bounces. */
export function agentsBounce(q: QueueContext): boolean {
  return q.store.meta(AGENTS_BOUNCE) === '1';
}

export function bouncesSent(store: MessageStore): number {
  return Number(store.meta(BOUNCES_SENT) ?? 0);
}

/** Remembers whether agents can bounce; when they cannot, owed bounces go to the operator. */
export function onBounceCapability(q: QueueContext, bounces: boolean): void {
  q.store.setMeta(AGENTS_BOUNCE, bounces ? '1' : '0');
  if (bounces) return;
  for (const id of q.store.idleBounces()) {
    q.store.bounceFailed(id, 'no bounce: the agent has no bounce relay configured');
    log('bounce.impossible', { id, why: 'the agent has no bounce relay configured' });
  }
}

/**
 * The agent's answer to a bounce task or a delay warning. Returns why it cannot be accepted
 * (the caller rejects the answer: settle.ts rejectAnswer), or null.
 */
export function onBounced(q: QueueContext, a: Attachment, frame: BouncedFrame): string | null {
  // A warning and a bounce of one message are never out at once (store.nextBounce): the id tells.
  const w = q.warnings.warning(frame.id);
  if (w && w.state === 'owed' && w.leaseSession === a.session) {
    onWarned(q, a, frame, w.dueAt);
    return null;
  }
  const msg = q.store.get(frame.id);
  if (!msg || msg.state !== 'bouncing' || msg.leaseSession !== a.session) {
    log('bounced.ignored', { session: a.session, id: frame.id, state: msg?.state ?? null });
    return null;
  }
  if (frame.results !== undefined) {
    const refused = foundDelivered(q, msg, frame.results, frame.status === 'delivered');
    if (refused !== null) return refused;
  }
  const reply = `${frame.code} ${frame.text}`.slice(0, MAX_RESULT_TEXT);
  switch (frame.status) {
    case 'delivered':
      // Its ack was lost, not its delivery: settled as acked (row and body gone), no DSN.
      q.store.finish(msg.id, q.store.dedupeKeyOf(msg.id), clock());
      log('message.acked', {
        id: msg.id, failure: msg.failure, foundAt: 'bounce', reply,
        results: mergeResults(msg.results, frame.results ?? []).map((r) => `${r.recipient} ${r.outcome} ${r.code}`),
      });
      break;
    case 'sent':
      q.store.bounced(msg.id, `sent: ${reply}`, clock());
      q.store.setMeta(BOUNCES_SENT, String(bouncesSent(q.store) + 1));
      log('bounce.sent', { id: msg.id, sender: msg.sender, reason: msg.failure, reply });
      break;
    case 'deferred':
      bounceLater(q, msg, reply);
      break;
    case 'failed':
      q.store.bounceFailed(msg.id, `bounce refused: ${reply}`);
      log('bounce.failed', { id: msg.id, sender: msg.sender, reply });
      break;
  }
  return null;
}

/**
 * A bounce task's recipients the agent found delivered (its journal, or Dovecot): kept in the
 * message's results, out of any later task. Why not (the bounce is deferred) when they are not
 * recipients of the task, or, with `all`, not every one of them; else null.
 */
function foundDelivered(q: QueueContext, msg: MessageRow, found: RecipientResult[], all: boolean): string | null {
  const owed = msg.results.filter((r) => r.outcome !== 'delivered').map((r) => r.recipient);
  const known = new Set(owed);
  const seen = new Set<string>();
  const fits = found.every((r) => known.has(r.recipient) && !seen.has(r.recipient) && seen.add(r.recipient));
  if (!fits || (all && !ackCovers(found, owed))) {
    return `the agent's bounced answer names recipients that are not ${all ? 'exactly those' : 'among those'} of the bounce task`;
  }
  q.store.setResults(msg.id, msg.recipients.filter((r) => !seen.has(r)), mergeResults(msg.results, found));
  log('bounce.found-delivered', { id: msg.id, failure: msg.failure, recipients: found.map((r) => r.recipient), all });
  return null;
}

/**
 * A deferred message owes its sender one delay warning once DELAY_WARNING_MS have passed
 * (recorded now, offered from then on by the pump while it is still deferred). `tempfails`: the
 * pending recipients' replies, refreshed at each deferral until the warning goes out.
 */
export function oweWarning(q: QueueContext, msg: MessageRow, tempfails: RecipientResult[]): void {
  const at = delayWarningAt(msg.sender, msg.retryFrom, readConfig(q.env).delayWarningMs);
  if (at !== null && tempfails.length > 0) q.warnings.oweWarning(msg.id, at, tempfails);
}

/** The agent's answer about a delay warning: the message itself is not touched, whatever it says. */
function onWarned(q: QueueContext, a: Attachment, frame: BouncedFrame, dueAt: number): void {
  const reply = `${frame.code} ${frame.text}`.slice(0, MAX_RESULT_TEXT);
  switch (frame.status) {
    case 'sent':
      q.warnings.settleWarning(frame.id, 'sent', `sent: ${reply}`);
      log('warning.sent', { id: frame.id, session: a.session, reply });
      break;
    case 'deferred':
      warningLater(q, frame.id, dueAt, reply);
      break;
    case 'failed':
    case 'delivered':  // never the answer to a warning: taken as a refusal, not offered again
      // A courtesy only: the message goes on being retried, the operator sees a warning in the log.
      q.warnings.settleWarning(frame.id, 'failed', `refused: ${reply}`);
      log('warning.failed', { id: frame.id, session: a.session, reply });
      break;
  }
}

/** A warning that could not go out now: offered again later, while its message is still deferred. */
export function warningLater(q: QueueContext, id: string, dueAt: number, why: string): void {
  const at = bounceRetryAt(dueAt, clock(), retryPolicy(q));
  q.warnings.settleWarning(id, 'owed', `deferred: ${why}`, at);
  log('warning.deferred', { id, why, nextAttemptAt: at });
}

/** A bounce that could not go out now: again later, for as long as a message is retried. */
export function bounceLater(q: QueueContext, msg: MessageRow, why: string): void {
  const now = clock();
  const since = msg.settledAt ?? now;
  const retry = retryPolicy(q);
  if (now - since >= retry.maxAgeMs) {
    q.store.bounceFailed(msg.id, `bounce not sent within ${exactDuration(retry.maxAgeMs)}: ${why}`);
    log('bounce.failed', { id: msg.id, sender: msg.sender, why });
    return;
  }
  const at = bounceRetryAt(since, now, retry);
  q.store.bounceLater(msg.id, `deferred: ${why}`, at);
  log('bounce.deferred', { id: msg.id, why, nextAttemptAt: at });
}

/** The header section a DSN quotes: from the row's head (a body in R2) or the first chunk. */
export function bounceHeaders(store: MessageStore, id: string): string {
  const head = store.head(id);
  return head.byteLength > 0 ? dsnHeaders(headerSection(head)) : '';
}
