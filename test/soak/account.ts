// The soak's books: where each recipient of each message ended up. Per recipient of a message
// the senders got 250 for: delivered (in Dovecot), refused at SMTP (named in the 250, or a 5xx
// for the whole message), bounced (a DSN at the bounce relay), dead-lettered (the queue says so,
// with the failure recorded), deleted by the operator (DELETE's 200 for its queue id), held
// (the queue says hold), else LOST. Extra copies and extra DSNs are duplicates; only those in a
// window the protocol admits (and that the evidence shows was hit) are explained, and each such
// window explains one copy at most. A DSN for a copy stored by a transaction attempt the sender
// was answered 4xx is explained when that copy was refused before the sender's retry was answered
// (the retry could not match it, and was a new message), or whenever refused when the last attempt
// refused that recipient at SMTP: one per such copy, counted apart.
import { createHash } from 'node:crypto';
import { MAY_BE_DELIVERED } from '../../lmtp-proxy/client.ts';
import type { Sunk } from '../helpers/smtp-sink.ts';
import { readDsn } from './dsn.ts';
import { identify, KNOWN, type SoakMessage } from './mail.ts';

/**
 * What one message's SMTP transaction came to. `ids`: queue id per accepted recipient.
 * `tempfailed`: the attempts before it answered 4xx (the stand-in hands each recipient off on its
 * own, so some may have stored copies), when each started and was answered, and the ids its
 * handoffs were told (a copy can be stored with its answer lost, e.g. to a Worker restart: its
 * queue row's time then places it); `answeredAt`: when the last attempt was.
 */
export interface Sent {
  msg: SoakMessage; accepted: boolean; ids: Map<string, string>; refusedAtSmtp: Set<string>;
  tempfailed?: { startedAt: number; answeredAt: number; ids: Map<string, string> }[]; answeredAt?: number;
}

/** One agent process: when it ran, and whether it ended by kill -9. */
export interface AgentLife { start: number; end: number; killed: boolean }

/** The queue's word on one message (GET /admin/messages/<id>), null when it is not there. */
export type QueueLookup = (id: string) => Promise<{ state: string; failure: string | null; receivedAt?: number } | null>;

export interface Evidence {
  seed: number;
  sent: Sent[];
  /** Every message in each known user's Maildir. */
  stored: { user: string; bytes: Buffer }[];
  /** Every message the bounce relay took. */
  dsns: Sunk[];
  agentLog: string;
  lives: AgentLife[];
  lookup: QueueLookup;
  /** Queue ids the operator deleted (the admin API answered 200). */
  deletedByOperator?: ReadonlySet<string>;
  /** A dead-lettered message the operator replayed goes on under a new id: old id -> new id (the replay's 200). */
  replayedAs?: ReadonlyMap<string, string>;
  /** Told where each accepted recipient ended (by its queue ids, replays included), for the summary's own counts. */
  onOutcome?: (qids: readonly string[], outcome: Outcome) => void;
  /** The agent asked Dovecot after each lost reply (doveadm check, issue #23): LMTP's window explains no extra copy. */
  doveadm?: boolean;
}

export type Outcome = 'delivered' | 'bounced' | 'dead-lettered' | 'deleted by the operator' | 'held' | 'lost';

export interface Books {
  /** Recipients of accepted messages by outcome. */
  delivered: number;
  refusedAtSmtp: number;
  bounced: number;
  deadLettered: number;
  /** Deleted by the operator on purpose: a legitimate end. */
  deletedByOperator: number;
  /** Still on hold at the end (the operator never released it). */
  held: number;
  /** Delivered although the operator's delete was answered 200, with no LMTP window to store it before. */
  deletedYetDelivered: number;
  lost: number;
  /** Of deadLettered: messages from <> (never bounced). */
  nullSenderDeadLettered: number;
  /**
   * Of deadLettered: messages from a sender who could have been told (the soak's bounce relay
   * never refuses for good, and nothing should expire or be given up): each is a finding.
   */
  givenUp: number;
  /** Extra copies in Dovecot: unexplained, and in LMTP's window (reply lost after the dot, agent killed mid-delivery). */
  duplicates: number;
  explainedDuplicates: number;
  /** Extra DSNs for one message and recipient (or a DSN for a delivered one): unexplained, and the agent killed between the relay's 250 and its journal. */
  bounceDuplicates: number;
  explainedBounceDuplicates: number;
  /** DSNs for copies of attempts answered 4xx: each copy refused before the retry, which then was a new message (tempfailCopies). */
  tempfailDsns: number;
  /** DSNs that are not what the sender must get (wrong envelope, fields, quoted headers), or match no accepted recipient. */
  badBounces: number;
  byteMismatches: number;
  strays: number;
  problems: string[];
}

interface BounceLine { id: string; ts: number; fromJournal: boolean }

/** What the agent's log says: per id its logged attempts (number -> time), the "may have been delivered" results, and the DSNs it journaled. */
export interface AgentLogFacts {
  /** `<id> <recipient>` -> how many results said the message may have been delivered. */
  ambiguous: Map<string, number>;
  attempts: Map<string, Map<number, number>>;
  /** Per id: attempts Dovecot took (a delivered result) whose ack the object never got (the connection was gone, or the message handed back). */
  unheard: Map<string, number>;
  bounces: BounceLine[];
  /** Per id: when the agent first reported a refusal for good (acked or journaled), or sent its DSN. */
  refusedAt: Map<string, number>;
}

export function readAgentLog(text: string): AgentLogFacts {
  const ambiguous = new Map<string, number>();
  const attempts = new Map<string, Map<number, number>>();
  const unheard = new Map<string, number>();
  const bounces: BounceLine[] = [];
  const refusedAt = new Map<string, number>();
  const refused = (id: string, ts: number): void => { refusedAt.set(id, Math.min(refusedAt.get(id) ?? ts, ts)); };
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    let e: {
      ts?: string; event?: string; id?: string; attempt?: number; fromJournal?: boolean; outcome?: string; results?: string[];
      notes?: { recipient: string; text: string }[];
    };
    try {
      e = JSON.parse(line) as typeof e;
    } catch {
      continue;  // a line cut by kill -9
    }
    if (e.id === undefined) continue;
    const ts = Date.parse(e.ts ?? '');
    if (e.event === 'bounce.sent') { bounces.push({ id: e.id, ts, fromJournal: e.fromJournal === true }); refused(e.id, ts); }
    if (!e.event?.startsWith('deliver.')) continue;
    if (e.attempt !== undefined) {
      const seen = attempts.get(e.id) ?? new Map<number, number>();
      seen.set(e.attempt, Math.max(seen.get(e.attempt) ?? ts, ts));
      attempts.set(e.id, seen);
    }
    if ((e.outcome === 'acked' || e.outcome === 'journal') && e.results?.some((r) => r.startsWith('permfail:')) === true) refused(e.id, ts);
    if (e.outcome !== 'acked' && e.outcome !== 'journal' && e.results?.some((r) => r.startsWith('delivered:')) === true) {
      unheard.set(e.id, (unheard.get(e.id) ?? 0) + 1);
    }
    for (const n of e.notes ?? []) {
      const key = `${e.id} ${n.recipient}`;
      if (n.text.includes(MAY_BE_DELIVERED)) ambiguous.set(key, (ambiguous.get(key) ?? 0) + 1);
    }
  }
  return { ambiguous, attempts, unheard, bounces, refusedAt };
}

/**
 * The copies for recipient `r` that attempts of `x` answered 4xx stored (one per attempt at most:
 * the id its handoff was told, else one of `others` whose queue row was stored while it ran), and
 * that the agent refused for good before the attempt after it was answered: that retry could not
 * match them (dedupe matches only a copy still owed or delivered) and made a copy of its own, so
 * each may have a DSN besides the final copy's. A copy refused only later should have been matched.
 * `refusedAtSmtp`: the last attempt refused `r` at SMTP (the list, checked before dedupe), so no
 * retry matched or made a copy for it: each such copy's DSN, whenever sent, is one notice more.
 */
export function tempfailCopies(
  x: Sent, r: string, log: AgentLogFacts, others: string[] = [], receivedAt: (id: string) => number | undefined = () => undefined, refusedAtSmtp = false,
): string[] {
  const final = x.ids.get(r);
  const attempts = x.tempfailed ?? [];
  const out: string[] = [];
  attempts.forEach((a, k) => {
    const retried = refusedAtSmtp ? Infinity : attempts[k + 1]?.answeredAt ?? x.answeredAt ?? Infinity;
    const told = a.ids.get(r);
    const stored = told !== undefined ? [told] : others.filter((q) => { const t = receivedAt(q); return t !== undefined && t >= a.startedAt && t <= a.answeredAt; });
    const q = stored.find((id) => id !== final && !out.includes(id) && (log.refusedAt.get(id) ?? Infinity) <= retried);
    if (q !== undefined) out.push(q);
  });
  return out;
}

/**
 * How many copies LMTP's window can explain for queue id `qid` and recipient `r`: one per
 * result that said "may have been delivered", and one per attempt missing from the log that
 * an agent killed -9 can have taken to Dovecot (an agent process that ran between the logged
 * attempts around it, and ended by SIGKILL). A missing attempt with no such kill never got to
 * LMTP (its lease was lost on the way), and explains nothing.
 */
export function lmtpWindows(log: AgentLogFacts, lives: AgentLife[], qid: string, r: string): number {
  let n = log.ambiguous.get(`${qid} ${r}`) ?? 0;
  const seen = log.attempts.get(qid);
  if (!seen) return n;
  const numbers = [...seen.keys()].sort((a, b) => a - b);
  const last = numbers[numbers.length - 1] ?? 0;
  for (let k = 1; k < last; k++) {
    if (seen.has(k)) continue;
    const before = numbers.filter((a) => a < k).map((a) => seen.get(a) ?? 0);
    const after = numbers.filter((a) => a > k).map((a) => seen.get(a) ?? Infinity);
    const from = before.length > 0 ? Math.max(...before) : -Infinity;
    const to = Math.min(...after);
    if (lives.some((l) => l.killed && l.end >= from && l.end <= to)) n++;
  }
  return n;
}

export async function account(ev: Evidence): Promise<Books> {
  const b: Books = {
    delivered: 0, refusedAtSmtp: 0, bounced: 0, deadLettered: 0, deletedByOperator: 0, held: 0, deletedYetDelivered: 0, lost: 0, nullSenderDeadLettered: 0, givenUp: 0, duplicates: 0, explainedDuplicates: 0,
    bounceDuplicates: 0, explainedBounceDuplicates: 0, tempfailDsns: 0, badBounces: 0, byteMismatches: 0, strays: 0, problems: [],
  };
  // A recipient's queue ids: the one its sender was told, then each replay's.
  const chainOf = (x: Sent, r: string): string[] => {
    const chain = [x.ids.get(r) ?? ''];
    for (let next = ev.replayedAs?.get(chain[0] ?? ''); next !== undefined && !chain.includes(next); next = ev.replayedAs?.get(next)) chain.push(next);
    return chain;
  };
  const problem = (what: string, x: Sent, r: string): void => {
    const [first, ...replays] = chainOf(x, r);
    if (b.problems.length < 20) {
      b.problems.push(`${what}: message ${ev.seed}-${x.msg.index} to ${r}, queue id ${first || '?'}${replays.length > 0 ? ` (replayed as ${replays.join(', then ')})` : ''}`);
    }
  };
  const bySoakId = new Map(ev.sent.map((x) => [`${ev.seed}-${x.msg.index}`, x]));

  // Dovecot: copies per message and recipient, each byte-exact.
  const copies = new Map<string, number>();
  for (const { user, bytes } of ev.stored) {
    const found = identify(bytes);
    const x = found ? bySoakId.get(found.soakId) : undefined;
    if (!found || !x) { b.strays++; continue; }
    if (createHash('sha256').update(found.body).digest('hex') !== x.msg.sha256) b.byteMismatches++;
    const key = `${found.soakId} ${user}`;
    copies.set(key, (copies.get(key) ?? 0) + 1);
  }

  // The bounce relay: DSNs per message and recipient, by the original Message-ID and Final-Recipient.
  const dsns = new Map<string, { sunk: Sunk; queueId: string | null }[]>();
  for (const sunk of ev.dsns) {
    const d = readDsn(sunk.body);
    const soakId = /^soak-(\d+-\d+)@example\.net$/.exec(d?.originalMessageId ?? '')?.[1];
    if (!d || soakId === undefined || !bySoakId.has(soakId) || d.recipients.length === 0) {
      b.badBounces++;
      if (b.problems.length < 20) b.problems.push(`a message at the bounce relay that is no DSN of a soak message (to ${sunk.to.join(', ')})`);
      continue;
    }
    for (const r of d.recipients) {
      const key = `${soakId} ${r.recipient}`;
      dsns.set(key, [...(dsns.get(key) ?? []), { sunk, queueId: d.queueId }]);
      if (r.action !== 'failed') {
        b.badBounces++;
        if (b.problems.length < 20) b.problems.push(`DSN for message ${soakId} to ${r.recipient} says Action: ${r.action}, not failed`);
      }
    }
  }

  const log = readAgentLog(ev.agentLog);
  // A DSN the relay took that the agent never journaled, sent by an agent that was then killed -9:
  // the crash fell between the relay's 250 and the journal's commit (bounce.ts), so the task came back.
  const killedBeforeJournal = (sunk: Sunk, qid: string | null): boolean => {
    const life = ev.lives.find((l) => l.start <= sunk.at && sunk.at <= l.end);
    if (!life?.killed || qid === null) return false;
    return !log.bounces.some((e) => e.id === qid && !e.fromJournal && e.ts >= sunk.at - 1 && e.ts <= life.end);
  };

  for (const x of ev.sent) {
    const soakId = `${ev.seed}-${x.msg.index}`;
    for (const r of x.msg.recipients) {
      const n = copies.get(`${soakId} ${r}`) ?? 0;
      const all = dsns.get(`${soakId} ${r}`) ?? [];
      dsns.delete(`${soakId} ${r}`);
      // One DSN per copy an attempt answered 4xx left behind is that copy's end; the rest are the final copy's.
      const others = [...new Set(all.flatMap((d) => (d.queueId !== null && d.queueId !== x.ids.get(r) ? [d.queueId] : [])))];
      const stored = new Map<string, number | undefined>();
      if ((x.tempfailed ?? []).length > 0) for (const q of others) stored.set(q, (await ev.lookup(q))?.receivedAt);
      const refused = !x.accepted || x.refusedAtSmtp.has(r);
      const ofTempfail = tempfailCopies(x, r, log, others, (q) => stored.get(q), refused).flatMap((q) => all.find((d) => d.queueId === q) ?? []);
      b.tempfailDsns += ofTempfail.length;
      const got = all.filter((d) => !ofTempfail.includes(d));
      // For a finding: the DSNs' queue ids, and the copies attempts not answered 250 stored (when answered).
      const seen = (): string => `DSNs for ${all.map((d) => d.queueId ?? '?').join(', ')}; attempts answered 4xx stored ${
        (x.tempfailed ?? []).map((a) => `${a.ids.get(r) ?? 'none'} (answered ${new Date(a.answeredAt).toISOString()})`).join(', ') || 'nothing'}`;
      if (refused) {
        b.refusedAtSmtp++;
        if (n > 0) { b.strays += n; problem('refused at SMTP, yet in Dovecot', x, r); }
        if (got.length > 0) { b.badBounces += got.length; problem(`refused at SMTP, yet bounced too (${seen()})`, x, r); }
        continue;
      }
      // Copies and windows of every id the message had; its end is the last id's.
      const chain = chainOf(x, r);
      const qid = chain[chain.length - 1] ?? '';
      // Every DSN for this recipient must be the one its sender is owed.
      for (const { sunk } of all) {
        const wrong = x.msg.sender === '' ? 'a DSN for a message from <>'
          : sunk.from !== '' ? `a DSN from <${sunk.from}>, not <>`
            : sunk.to.length !== 1 || sunk.to[0] !== x.msg.sender ? `a DSN to ${sunk.to.join(', ')}, not the envelope sender` : null;
        if (wrong !== null) { b.badBounces++; problem(wrong, x, r); }
      }
      const explainedDsns = got.filter((d) => killedBeforeJournal(d.sunk, d.queueId)).length;
      const windows = chain.reduce((k, id) => k + lmtpWindows(log, ev.lives, id, r), 0);
      const unheard = chain.reduce((k, id) => k + (log.unheard.get(id) ?? 0), 0);
      if (n >= 1) {
        b.delivered++;
        ev.onOutcome?.(chain, 'delivered');
        // A delete is refused while an agent holds the message: a copy it still made came through a
        // window, or by an attempt whose ack was lost with its connection (the object had it queued again).
        if (ev.deletedByOperator?.has(qid) === true && n > windows + unheard) { b.deletedYetDelivered++; problem('delivered after the operator deleted it', x, r); }
        // Each window stored one copy at most that the agent could not know of; with the doveadm
        // check on, the agent asked Dovecot after each window, so none explains a copy.
        const copyWindows = ev.doveadm === true ? 0 : windows;
        const explained = Math.min(n - 1, copyWindows);
        b.explainedDuplicates += explained;
        if (n - 1 > explained) { b.duplicates += n - 1 - explained; problem(`${n} copies, ${copyWindows} explained by LMTP's window`, x, r); }
        // Delivered and bounced: the sender was told it failed. Explained only if every copy came
        // through a window (the agent saw none of them delivered), and every DSN past the first by its own.
        if (got.length > 0 && n <= windows && got.length - 1 <= explainedDsns) b.explainedBounceDuplicates += got.length;
        else if (got.length > 0) { b.bounceDuplicates += got.length; problem(`delivered (${n} copies, ${windows} windows), and bounced ${got.length} times too`, x, r); }
        continue;
      }
      if (got.length >= 1) {
        b.bounced++;
        ev.onOutcome?.(chain, 'bounced');
        const extra = got.length - 1;
        const explained = Math.min(extra, explainedDsns);
        b.explainedBounceDuplicates += explained;
        if (extra > explained) { b.bounceDuplicates += extra - explained; problem(`${got.length} DSNs (${seen()})`, x, r); }
        continue;
      }
      const q = await ev.lookup(qid);
      if (q?.state === 'dead-letter' && q.failure !== null) {
        b.deadLettered++;
        if (x.msg.sender === '') b.nullSenderDeadLettered++;
        else { b.givenUp++; problem(`dead-lettered (${q.failure}), its sender never told`, x, r); }
        ev.onOutcome?.(chain, 'dead-lettered');
        continue;
      }
      if (q === null && ev.deletedByOperator?.has(qid) === true) { b.deletedByOperator++; ev.onOutcome?.(chain, 'deleted by the operator'); continue; }
      if (q?.state === 'hold') { b.held++; ev.onOutcome?.(chain, 'held'); continue; }
      b.lost++;
      ev.onOutcome?.(chain, 'lost');
      problem(`lost (in no mailbox, no DSN; the queue says ${q === null ? 'no such message' : `${q.state}${q.state === 'bounced' ? ', yet the relay has no DSN' : ''}`})`, x, r);
    }
  }
  // DSNs left over name a recipient no sender got 250 for.
  for (const [key, got] of dsns) {
    b.badBounces += got.length;
    if (b.problems.length < 20) b.problems.push(`DSN for ${key}, which no sender got 250 for`);
  }
  return b;
}
