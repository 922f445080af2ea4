// The per-recipient delivery lines, Postfix's `status=` lines: one event per recipient
// of each attempt that reached an end, named for its status (delivery.sent,
// delivery.deferred, delivery.bounced), with Postfix's field names. Logged by agent.ts;
// written as text by log.ts's maillog format.
import type { RecipientResult } from '../../protocol/wire.ts';
import type { Target } from '../../lmtp-proxy/target.ts';
import type { Settled } from '../session/session.ts';

/** The agent's statuses; the object's own (bounce sent, dead-letter) are in the Worker's log. */
export type DeliveryStatus = 'sent' | 'deferred' | 'bounced';

const STATUS: Record<RecipientResult['outcome'], DeliveryStatus> = { delivered: 'sent', tempfail: 'deferred', permfail: 'bounced' };
const CLASS: Record<DeliveryStatus, string> = { sent: '2', deferred: '4', bounced: '5' };

export interface DeliveryLine {
  event: `delivery.${DeliveryStatus}`;
  fields: {
    id: string;
    from: string;
    to: string;
    relay: string;
    attempt: number;
    /** Seconds from the Worker's acceptance to this answer. */
    delay: number;
    /** `q/d`: seconds in the queue before this attempt / of this attempt (transfer and LMTP). */
    delays: string;
    dsn: string;
    status: DeliveryStatus;
    /** The target's reply (`250 2.0.0 <x> Saved`), or the local error when there was none. */
    reply: string;
  } & Record<string, unknown>;
}

/** `relay=` as Postfix writes it, without the address it cannot know unresolved: host:port or the socket path. */
export function relayName(t: Target): string {
  if ('path' in t) return t.path;
  return `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
}

/** Postfix's precision: hundredths below 10 s, tenths below 100 s, whole seconds above. */
export function seconds(ms: number): number {
  const s = Math.max(0, ms) / 1000;
  return s < 10 ? Math.round(s * 100) / 100 : s < 100 ? Math.round(s * 10) / 10 : Math.round(s);
}

/**
 * The RFC 3463 code: the reply's own (parsed when the target offers ENHANCEDSTATUSCODES, else
 * read from the start of its text, as Postfix does), else the class's x.0.0.
 */
export function dsnOf(r: RecipientResult, status: DeliveryStatus): string {
  const cls = CLASS[status];
  if (r.enhanced !== null && r.enhanced.startsWith(cls)) return r.enhanced;
  const m = /^([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: |$)/.exec(r.text);
  return m?.[1] !== undefined && m[1].startsWith(cls) ? m[1] : `${cls}.0.0`;
}

export function replyOf(r: RecipientResult): string {
  if (r.code === 0) return r.text;
  return [String(r.code), r.enhanced, r.text].filter((x) => x !== null && x !== '').join(' ');
}

/**
 * The lines of one settled message: each recipient's result after an LMTP delivery (or from
 * the journal: relay=journal); every recipient deferred when the message was nacked for a
 * fault (corrupt transfer, local error). None when it was handed back or its socket was gone:
 * no attempt ended, and the object sends it again.
 */
export function deliveryLines(s: Settled, relay: string, now: number): DeliveryLine[] {
  const total = now - s.receivedAt;
  const line = (to: string, via: string, status: DeliveryStatus, dsn: string, reply: string): DeliveryLine => ({
    event: `delivery.${status}`,
    fields: {
      id: s.id, from: s.sender, to, relay: via, attempt: s.attempt,
      delay: seconds(total), delays: `${seconds(total - s.ms)}/${seconds(s.ms)}`, dsn, status, reply, ...s.note,
    },
  });
  if ((s.outcome === 'acked' || s.outcome === 'journal') && s.results) {
    const via = s.outcome === 'journal' ? 'journal' : relay;
    return s.results.map((r) => {
      const status = STATUS[r.outcome];
      return line(r.recipient, via, status, dsnOf(r, status), replyOf(r));
    });
  }
  if (s.outcome === 'corrupt' || s.outcome === 'unavailable') {
    const reply = s.error ?? (s.outcome === 'corrupt' ? 'message corrupted in transfer' : 'local error');
    return s.to.map((to) => line(to, relay, 'deferred', '4.0.0', reply));
  }
  return [];
}
