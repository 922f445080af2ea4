// Bounce tasks: the object asks this agent to tell a sender that its message failed for
// good. The DSN (dsn.ts) goes to the bounce relay (the home server's own MTA, which sends
// mail out) with the null sender, so a bounce can never bounce back. At most one DSN per
// task: the relay's 2xx is journaled before `bounced sent` is answered, and a redelivered
// task that the journal knows is answered `sent` without mailing again.
//
// The one window left is LMTP's: a crash after the relay's 250 and before the journal
// commit leaves no record, and the redelivered task sends a second DSN. So does a lost
// reply to the final dot (the client then reports a temporary failure: `deferred`).
//
// A task the object gave up without a refusal (`attempts`, `expired`) may be for a message
// this agent delivered, its ack lost with the connection: before any DSN, the journal (and,
// with the doveadm check on, Dovecot) is asked. Recipients found delivered are left out of the
// DSN and named in the answer; when every one was, no DSN goes out and the answer is
// `delivered`: the object settles the message as acked. One message, one outcome.
//
// A task with reason `delayed` is a delay warning (the message is still being retried): the
// same path, its own journal kind, so a message's warning and its later bounce go out once each.
import { LmtpClient, type RecipientReply } from '../../lmtp-proxy/client.ts';
import { formatTarget, parseTarget, type Target } from '../../lmtp-proxy/target.ts';
import { encodeFrame, MAX_RESULT_TEXT, wireResults, type BounceFrame, type BouncedFrame, type RecipientResult } from '../../protocol/wire.ts';
import type { Settled } from '../session/session.ts';
import { buildDsn } from './dsn.ts';
import type { DsnKind, Journal } from '../delivery/journal.ts';
import type { Logger } from '../ops/log.ts';
import { PerKey } from '../delivery/per-key.ts';

/** Waits for the local relay, shorter than RFC 5321's: a hung relay must not hold a window slot for 10 minutes. */
const RELAY_TIMEOUTS = { connect: 10_000, greeting: 60_000, command: 60_000, dataBlock: 60_000, final: 120_000 };

export interface BouncerOptions {
  /** smtp://host:port (agent-config.ts checked it). */
  relay: string;
  journal: Journal;
  log: Logger;
  /** Reporting-MTA and the DSN's From: domain. */
  reportingMta: string;
  /** EHLO name. */
  localName: string;
  now: () => number;
  timeouts?: Partial<typeof RELAY_TIMEOUTS>;
  /** Names of the home network a DSN must not show (dsn.ts hideHome); the relay's own host is added. */
  hide?: readonly string[];
  /** What the journal (or Dovecot) knows of a message's recipients (Deliverer.known); unset: not asked. */
  known?: (id: string, recipients: string[]) => Promise<{ results: Map<string, RecipientResult> } | { unknown: string }>;
  /** A task every recipient of which was found delivered: its per-recipient lines (status=sent). */
  onDelivered?: (s: Settled) => void;
}

/** The answer to a task found delivered to every recipient: no DSN went out. */
const FOUND_TEXT = 'delivered: found in the agent\'s journal, no DSN sent';
const FOUND_NOTE = 'found in the journal when the bounce task came';

/** A target's host, or its socket path: what a DSN must not show of it. */
export function homeNames(t: Target): string[] {
  return ['path' in t ? t.path : t.host];
}

/** A delay warning is journaled apart from the message's bounce. */
const kindOf = (task: BounceFrame): DsnKind => (task.reason === 'delayed' ? 'warning' : 'bounce');

/**
 * What a `bounced` frame may carry beyond an ack's fields: status, code and a reply text of
 * MAX_RESULT_TEXT characters that JSON escapes at worst 6 to 1. Its `results` leave room for it,
 * or the object would refuse the frame and the message never settle.
 */
const BOUNCED_RESERVE = encodeFrame({ type: 'bounced', id: '0'.repeat(32), status: 'delivered', code: 599, text: '\u0000'.repeat(MAX_RESULT_TEXT), results: [] }).length -
  encodeFrame({ type: 'ack', id: '0'.repeat(32), results: [] }).length;

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

const clamp = (s: string): string => s.slice(0, MAX_RESULT_TEXT);

export class Bouncer {
  readonly #o: BouncerOptions;
  readonly #relay: Target;
  readonly #hide: readonly string[];
  /** Tasks by id and kind: a redelivery while the first run still talks to the relay waits for it. */
  readonly #running = new PerKey<BouncedFrame>();

  constructor(o: BouncerOptions) {
    this.#o = o;
    this.#relay = parseTarget(o.relay);
    this.#hide = [...(o.hide ?? []), ...homeNames(this.#relay)];
  }

  /** Sends the DSN of one task (or finds it sent). Never rejects: every outcome is a `bounced` frame. */
  readonly run = async (task: BounceFrame): Promise<BouncedFrame> => {
    return this.#running.run(`${task.id}:${kindOf(task)}`, () => this.#once(task));
  };

  /** Bounce tasks running now. */
  get running(): number {
    return this.#running.size;
  }

  async #once(task: BounceFrame): Promise<BouncedFrame> {
    const { journal, log, now } = this.#o;
    const kind = kindOf(task);
    const known = await this.#known(task);
    if ('unknown' in known) {
      log(`${kind}.deferred`, { id: task.id, to: task.sender, reason: task.reason, code: 0, text: known.unknown });
      return { type: 'bounced', id: task.id, status: 'deferred', code: 0, text: clamp(known.unknown) };
    }
    const { failed, found } = known;
    // Names the delivered ones, whatever the answer: the object keeps their results.
    const extra = found.length > 0 ? { results: found } : {};
    const fields = {
      id: task.id, to: task.sender, relay: formatTarget(this.#relay), reason: task.reason, recipients: failed.length,
      ...(found.length > 0 ? { delivered: found.map((r) => r.recipient) } : {}),
    };
    const sent = journal.bounceSent(task.id, kind);
    if (sent) {
      log(`${kind}.sent`, { ...fields, code: sent.code, text: sent.text, fromJournal: true });
      return { type: 'bounced', id: task.id, status: 'sent', code: sent.code, text: sent.text, ...extra };
    }
    if (failed.length === 0) {
      log('bounce.delivered', { ...fields, text: FOUND_TEXT });
      this.#o.onDelivered?.({
        id: task.id, attempt: 0, recipients: found.length, sender: task.sender, to: found.map((r) => r.recipient),
        receivedAt: task.receivedAt, bytes: 0, ms: 0, outcome: 'journal', results: found, error: null, note: { note: FOUND_NOTE },
      });
      return { type: 'bounced', id: task.id, status: 'delivered', code: 250, text: FOUND_TEXT, results: found };
    }
    const dsn = buildDsn({
      reportingMta: this.#o.reportingMta, to: task.sender, arrivalDate: task.receivedAt, id: task.id, reason: task.reason,
      results: failed, headers: Buffer.from(task.headers, 'base64'), now: now(), hide: this.#hide,
      ...(task.retryUntil !== undefined ? { retryUntil: task.retryUntil } : {}),
    });
    const r = await this.#send(task.sender, dsn);
    const code = r.code;
    const text = clamp(r.text);
    if (r.outcome === 'delivered') {
      // Durable before the answer: a lost answer brings the task back, and then this record answers it.
      try {
        await journal.addBounce(task.id, { code, text }, now(), kind);
      } catch (err) {
        // The DSN is out all the same; answering `sent` stops the object asking again.
        log('journal.failed', { id: task.id, [kind]: true, error: (err as Error).message });
      }
      log(`${kind}.sent`, { ...fields, code, text });
      return { type: 'bounced', id: task.id, status: 'sent', code, text, ...extra };
    }
    // 5xx: the relay will never take it (the object keeps the message in dead-letter);
    // 4xx, no connection, no answer: the object tries again later.
    const status = r.outcome === 'permfail' ? 'failed' : 'deferred';
    log(`${kind}.${status}`, { ...fields, code, text });
    return { type: 'bounced', id: task.id, status, code, text, ...extra };
  }

  /**
   * The task's recipients split by what the journal knows: `found` delivered (for the answer),
   * `failed` for the DSN, each with the refusal the journal holds if it holds one. Only for a
   * failure that was no refusal; `unknown` when Dovecot could not say.
   */
  async #known(task: BounceFrame): Promise<{ failed: RecipientResult[]; found: RecipientResult[] } | { unknown: string }> {
    const ask = this.#o.known;
    if (!ask || (task.reason !== 'attempts' && task.reason !== 'expired')) return { failed: task.results, found: [] };
    const k = await ask(task.id, task.results.map((r) => r.recipient)).catch((err: unknown) => ({ unknown: (err as Error).message }));
    if ('unknown' in k) return k;
    const failed: RecipientResult[] = [];
    const found: RecipientResult[] = [];
    for (const r of task.results) {
      const j = k.results.get(r.recipient);
      if (j?.outcome === 'delivered') found.push(j);
      else failed.push(j?.outcome === 'permfail' ? j : r);
    }
    return { failed, found: wireResults(found, BOUNCED_RESERVE) };
  }

  async #send(to: string, dsn: Uint8Array): Promise<RecipientReply> {
    // One connection per bounce: bounces are rare, and an idle connection to the relay would only time out.
    const client = new LmtpClient(this.#relay, { localName: this.#o.localName, timeouts: { ...RELAY_TIMEOUTS, ...this.#o.timeouts } });
    try {
      const [r] = await client.deliver({ sender: '', recipients: [to] }, once(dsn), {
        size: dsn.byteLength, eightBit: dsn.some((b) => b >= 0x80),
      });
      return r ?? { recipient: to, code: 0, enhanced: null, text: 'no result from the SMTP client', outcome: 'tempfail' };
    } catch (err) {
      // An address the client will not put in a command: no relay will ever take it.
      return { recipient: to, code: 0, enhanced: null, text: (err as Error).message, outcome: 'permfail' };
    } finally {
      void client.close().catch(() => undefined);
    }
  }
}
