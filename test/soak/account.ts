// The soak's books: where each recipient of each message ended up. Per recipient of a message
// the senders got 250 for: delivered (in Dovecot), refused at SMTP (named in the 250, or a 5xx
// for the whole message), bounced (a DSN at the bounce relay), dead-lettered (the queue says so,
// with the failure recorded), else LOST. Extra copies and extra DSNs are duplicates; only those
// in a window the protocol admits (and that the evidence shows was hit) are explained.
import { createHash } from 'node:crypto';
import { MAY_BE_DELIVERED } from '../../lmtp-proxy/client.ts';
import type { Sunk } from '../helpers/smtp-sink.ts';
import { readDsn } from './dsn.ts';
import { identify, KNOWN, type SoakMessage } from './mail.ts';

/** What one message's SMTP transaction came to. `ids`: queue id per accepted recipient. */
export interface Sent { msg: SoakMessage; accepted: boolean; ids: Map<string, string>; refusedAtSmtp: Set<string> }

/** One agent process: when it ran, and whether it ended by kill -9. */
export interface AgentLife { start: number; end: number; killed: boolean }

/** The queue's word on one message (GET /admin/messages/<id>), null when it is not there. */
export type QueueLookup = (id: string) => Promise<{ state: string; failure: string | null } | null>;

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
  /** The agent asked Dovecot after each lost reply (doveadm check, issue #23): LMTP's window explains no extra copy. */
  doveadm?: boolean;
}

export interface Books {
  /** Recipients of accepted messages by outcome. */
  delivered: number;
  refusedAtSmtp: number;
  bounced: number;
  deadLettered: number;
  lost: number;
  /** Of deadLettered: messages from <> (never bounced). */
  nullSenderDeadLettered: number;
  /** Extra copies in Dovecot: unexplained, and in LMTP's window (reply lost after the dot, agent killed mid-delivery). */
  duplicates: number;
  explainedDuplicates: number;
  /** Extra DSNs for one message and recipient (or a DSN for a delivered one): unexplained, and the agent killed between the relay's 250 and its journal. */
  bounceDuplicates: number;
  explainedBounceDuplicates: number;
  /** DSNs that are not what the sender must get (wrong envelope, fields, quoted headers), or match no accepted recipient. */
  badBounces: number;
  byteMismatches: number;
  strays: number;
  problems: string[];
}

interface BounceLine { id: string; ts: number; fromJournal: boolean }

/** What the agent's log says: LMTP-window attempts, and the DSNs it journaled. */
function readAgentLog(text: string): { ambiguous: Set<string>; attempts: Map<string, Set<number>>; bounces: BounceLine[] } {
  const ambiguous = new Set<string>();
  const attempts = new Map<string, Set<number>>();
  const bounces: BounceLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    let e: { ts?: string; event?: string; id?: string; attempt?: number; fromJournal?: boolean; notes?: { recipient: string; text: string }[] };
    try {
      e = JSON.parse(line) as typeof e;
    } catch {
      continue;  // a line cut by kill -9
    }
    if (e.id === undefined) continue;
    if (e.event === 'bounce.sent') bounces.push({ id: e.id, ts: Date.parse(e.ts ?? ''), fromJournal: e.fromJournal === true });
    if (!e.event?.startsWith('deliver.')) continue;
    if (e.attempt !== undefined) attempts.set(e.id, (attempts.get(e.id) ?? new Set()).add(e.attempt));
    for (const n of e.notes ?? []) if (n.text.includes(MAY_BE_DELIVERED)) ambiguous.add(`${e.id} ${n.recipient}`);
  }
  return { ambiguous, attempts, bounces };
}

export async function account(ev: Evidence): Promise<Books> {
  const b: Books = {
    delivered: 0, refusedAtSmtp: 0, bounced: 0, deadLettered: 0, lost: 0, nullSenderDeadLettered: 0, duplicates: 0, explainedDuplicates: 0,
    bounceDuplicates: 0, explainedBounceDuplicates: 0, badBounces: 0, byteMismatches: 0, strays: 0, problems: [],
  };
  const problem = (what: string, x: Sent, r: string): void => {
    if (b.problems.length < 20) b.problems.push(`${what}: message ${ev.seed}-${x.msg.index} to ${r}, queue id ${x.ids.get(r) ?? '?'}`);
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
  // A delivery duplicate in LMTP's window: the reply after the dot was lost, or an attempt never finished (kill -9).
  const unfinished = (id: string): boolean => {
    const seen = log.attempts.get(id) ?? new Set<number>();
    const last = Math.max(0, ...seen);
    for (let k = 1; k < last; k++) if (!seen.has(k)) return true;
    return false;
  };
  const inLmtpWindow = (qid: string, r: string): boolean => log.ambiguous.has(`${qid} ${r}`) || unfinished(qid);
  // With the doveadm check on, the agent asked Dovecot after each lost reply: no extra copy is explained.
  const copyInLmtpWindow = (qid: string, r: string): boolean => ev.doveadm !== true && inLmtpWindow(qid, r);
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
      const got = dsns.get(`${soakId} ${r}`) ?? [];
      dsns.delete(`${soakId} ${r}`);
      if (!x.accepted || x.refusedAtSmtp.has(r)) {
        b.refusedAtSmtp++;
        if (n > 0) { b.strays += n; problem('refused at SMTP, yet in Dovecot', x, r); }
        if (got.length > 0) { b.badBounces += got.length; problem('refused at SMTP, yet bounced too', x, r); }
        continue;
      }
      const qid = x.ids.get(r) ?? '';
      // Every DSN for this recipient must be the one its sender is owed.
      for (const { sunk } of got) {
        const wrong = x.msg.sender === '' ? 'a DSN for a message from <>'
          : sunk.from !== '' ? `a DSN from <${sunk.from}>, not <>`
            : sunk.to.length !== 1 || sunk.to[0] !== x.msg.sender ? `a DSN to ${sunk.to.join(', ')}, not the envelope sender` : null;
        if (wrong !== null) { b.badBounces++; problem(wrong, x, r); }
      }
      const explainedDsns = got.filter((d) => killedBeforeJournal(d.sunk, d.queueId)).length;
      if (n >= 1) {
        b.delivered++;
        if (n > 1 && copyInLmtpWindow(qid, r)) b.explainedDuplicates += n - 1;
        else if (n > 1) { b.duplicates += n - 1; problem(`${n} copies`, x, r); }
        // Delivered and bounced: the sender was told it failed. Explained only by LMTP's window.
        if (got.length > 0 && inLmtpWindow(qid, r)) b.explainedBounceDuplicates += got.length;
        else if (got.length > 0) { b.bounceDuplicates += got.length; problem('delivered, and bounced too', x, r); }
        continue;
      }
      if (got.length >= 1) {
        b.bounced++;
        const extra = got.length - 1;
        const explained = Math.min(extra, explainedDsns);
        b.explainedBounceDuplicates += explained;
        if (extra > explained) { b.bounceDuplicates += extra - explained; problem(`${got.length} DSNs`, x, r); }
        continue;
      }
      const q = await ev.lookup(qid);
      if (q?.state === 'dead-letter' && q.failure !== null) {
        b.deadLettered++;
        if (x.msg.sender === '') b.nullSenderDeadLettered++;
        continue;
      }
      b.lost++;
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
