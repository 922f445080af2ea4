// The synchronous verdict: email() may wait a few seconds for the agent's ack of
// the message it just stored, so that a recipient Dovecot refuses for good
// (550 5.1.1 unknown user) is refused to the sender's MTA, which then bounces it
// itself, instead of being accepted and dropped in silence. In memory only: a
// verdict that is lost (eviction, restart) just means "accept", which is safe.
import type { RecipientResult } from '../protocol/wire.ts';

export type Verdict =
  | { kind: 'final'; results: RecipientResult[] }  // every recipient delivered or refused for good
  | { kind: 'deferred' | 'dead-letter' }           // some recipient will be tried again
  | { kind: 'pending' }                            // no ack within the wait
  | { kind: 'offline' }                            // no agent to ask
  | { kind: 'unknown' };                           // not in the queue (settled long ago)

/** How long a settled message's results are kept for a verdict() that comes late. */
const KEEP_MS = 60_000;

export class VerdictBoard {
  readonly #recent = new Map<string, { verdict: Verdict; at: number }>();
  readonly #waiting = new Map<string, ((v: Verdict) => void)[]>();

  /**
   * The queue settled message `id` (ack or nack). Returns how many email() calls were
   * waiting for it: they answer the sender with this verdict.
   */
  settled(id: string, verdict: Verdict, now = Date.now()): number {
    for (const [k, v] of this.#recent) if (v.at < now - KEEP_MS) this.#recent.delete(k);
    this.#recent.set(id, { verdict, at: now });
    const waiters = this.#waiting.get(id) ?? [];
    this.#waiting.delete(id);
    for (const w of waiters) w(verdict);
    return waiters.length;
  }

  recent(id: string): Verdict | null {
    return this.#recent.get(id)?.verdict ?? null;
  }

  /** Resolves with the settlement of `id`, or 'pending' after `ms`. */
  wait(id: string, ms: number): Promise<Verdict> {
    return new Promise((resolve) => {
      const done = (v: Verdict): void => {
        clearTimeout(timer);
        resolve(v);
      };
      const timer = setTimeout(() => {
        const list = this.#waiting.get(id)?.filter((w) => w !== done) ?? [];
        if (list.length > 0) this.#waiting.set(id, list);
        else this.#waiting.delete(id);
        resolve({ kind: 'pending' });
      }, ms);
      this.#waiting.set(id, [...(this.#waiting.get(id) ?? []), done]);
    });
  }
}

/** The reason given to setReject() when Dovecot refused every recipient: its own words. */
export function rejectReason(results: RecipientResult[]): string | null {
  if (results.length === 0 || !results.every((r) => r.outcome === 'permfail')) return null;
  const r = results[0];
  if (!r) return null;
  // From the agent: printable ASCII only, bounded, so it can go into an SMTP reply line.
  const clean = (s: string): string => s.replace(/[^\x20-\x7e]+/g, ' ').slice(0, 300).trim();
  const enhanced = r.enhanced !== null && /^5\.\d{1,3}\.\d{1,3}$/.test(r.enhanced) ? r.enhanced : '5.0.0';
  return `${enhanced} <${clean(r.recipient)}>: ${clean(r.text) || 'refused'} (${r.code} from the destination mail server)`;
}
