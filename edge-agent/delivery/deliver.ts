// One message into the LMTP target, exactly once: the journal answers ids it
// already knows; otherwise the message streams into an (idle, reused) LMTP
// connection behind the trace header, and the final results are journaled
// before the caller may ack them. Results are shaped for the wire (wireResults) before
// they are journaled or acked: a target's long reply must never make an ack the object
// refuses, and a redelivery answered from the journal must not either.
//
// With the doveadm check on (doveadmUrl), the journal also knows whose body went out without
// a final reply (journal.ts, marks). Such a recipient is searched for in Dovecot before the
// next attempt (doveadm.ts): found, it counts as delivered; not found, it is delivered; no
// answer from Dovecot defers the message. A message whose outcome was known costs no search.
import { wireResults, type RecipientResult } from '../../protocol/wire.ts';
import { LmtpClient, MAY_BE_DELIVERED, type RecipientReply } from '../../lmtp-proxy/client.ts';
import type { Target } from '../../lmtp-proxy/target.ts';
import type { AgentConfig } from '../agent-config.ts';
import { Doveadm } from './doveadm.ts';
import type { TargetWatch } from '../ops/health.ts';
import type { InboundMessage } from '../session/inbound.ts';
import type { Journal } from './journal.ts';
import type { Logger } from '../ops/log.ts';
import { tapHeaders } from './subject.ts';
import { renameForged } from './forged-results.ts';
import { authResultsHeader, traceHeader } from './trace.ts';
import { PerKey } from './per-key.ts';

/** What a delivery produced: one final result per recipient. */
export interface Delivered {
  results: RecipientResult[];
  /** Every recipient was answered from the journal: no LMTP delivery happened. */
  fromJournal: boolean;
  /** Extra fields for the delivery's log line (the Subject, when enabled). */
  note?: Record<string, unknown>;
}

export interface DeliveryStats {
  delivered: number;
  tempfail: number;
  permfail: number;
  fromJournal: number;
}

/**
 * Body bytes per BDAT to Dovecot. The LMTP client holds up to this much of each message while
 * Dovecot answers the previous chunk; with several large messages in flight, 1 MiB each kept
 * the agent above 80 MB (issue #24). 256 KiB was no slower on the bench's 5 MiB and 25 MiB
 * messages (bench/results/2026-12-07-memory.md).
 */
export const LMTP_BDAT_BYTES = 256 * 1024;

/** A recipient's LMTP reply as the wire's result (lmtp-proxy keeps its own type: it imports no protocol/). */
export const resultOf = (r: RecipientReply): RecipientResult => ({ recipient: r.recipient, code: r.code, enhanced: r.enhanced, text: r.text, outcome: r.outcome });

/** One result as the wire takes it on its own: its text within MAX_RESULT_TEXT, codes valid. */
const alone = (r: RecipientResult): RecipientResult => wireResults([r])[0] ?? r;

/**
 * The head, then the body. `before` starts with the first byte and must have succeeded before
 * the last one is taken: the LMTP client sends the final dot (or BDAT LAST) only after the
 * body's end, so what `before` commits is on disk before the target can store the message.
 */
async function* withTrace(head: Uint8Array, body: AsyncIterable<Uint8Array>, before?: () => Promise<void>): AsyncIterable<Uint8Array> {
  const done = before?.();
  done?.catch(() => undefined);  // awaited below; a body that fails first must not leave it unhandled
  yield head;
  yield* body;
  await done;
}

/** How long after an unknown outcome a copy Dovecot was still saving may take to show (#askDovecot). */
export const SETTLE_MS = 3_000;

/** After the final dot, a reply that leaves it unknown whether the target stored the message. */
const unknownOutcome = (r: RecipientResult): boolean => r.outcome === 'tempfail' && r.text.includes(MAY_BE_DELIVERED);

export class Deliverer {
  readonly #cfg: AgentConfig;
  readonly #target: Target;
  readonly #journal: Journal;
  readonly #watch: TargetWatch;
  readonly #log: Logger;
  readonly #stats: DeliveryStats;
  readonly #logSubject: boolean;
  readonly #now: () => number;
  /** Asks Dovecot after an unknown outcome; null = the check is off. */
  readonly #doveadm: Doveadm | null;
  /**
   * Idle connections, one per parallel delivery at most. The client reuses one as it is after a
   * clean end, and probes one idle past PROBE_AFTER_MS with RSET first (lmtp-proxy/client.ts).
   */
  readonly #idle: LmtpClient[] = [];
  /**
   * Deliveries by message id. A delivery outlives the connection it came on: when the
   * object redelivers the id on a new connection while the old delivery still runs, the
   * new one waits for it and then answers from the journal, never delivering twice.
   */
  readonly #running = new PerKey<Delivered>();
  #closed = false;

  constructor(o: {
    cfg: AgentConfig; target: Target; journal: Journal; watch: TargetWatch; log: Logger;
    stats: DeliveryStats; logSubject: boolean; now: () => number;
  }) {
    this.#cfg = o.cfg;
    this.#target = o.target;
    this.#journal = o.journal;
    this.#watch = o.watch;
    this.#log = o.log;
    this.#stats = o.stats;
    this.#logSubject = o.logSubject;
    this.#now = o.now;
    const { doveadmUrl: url, doveadmApiKey: apiKey } = o.cfg;
    this.#doveadm = url !== null && apiKey !== null ? new Doveadm({ url, apiKey, recipientDelimiter: o.cfg.recipientDelimiter }) : null;
    // Once at start: a wrong URL or key shows now, not on the day a reply is lost.
    const api = this.#doveadm;
    api?.check().then(() => o.log('doveadm.ready', { url: api.endpoint }),
      (err: unknown) => o.log('doveadm.failed', { url: api.endpoint, at: 'start', error: (err as Error).message }));
  }

  /** Deliveries running now, also those that outlived their connection. */
  get running(): number {
    return this.#running.size;
  }

  readonly deliver = async (msg: InboundMessage): Promise<Delivered> => {
    const id = msg.header.id;
    return this.#running.run(id, () => this.#once(msg),
      () => this.#log('deliver.wait', { id, reason: 'still being delivered from an earlier connection' }));
  };

  async #once(msg: InboundMessage): Promise<Delivered> {
    const h = msg.header;
    if (this.#closed) throw new Error('agent stopped');
    const known = this.#journal.lookup(h.id, h.recipients);
    let todo = h.recipients.filter((r) => !known.has(r));
    // The ack: each text within its own limit (as journaled), then all of them cut to fit one
    // frame. The same results in give the same ack out, so a redelivery gets the same answer.
    const answer = (fresh: RecipientResult[]): RecipientResult[] => wireResults(h.recipients.map((r) => known.get(r) ?? fresh.find((x) => x.recipient === r) ?? {
      recipient: r, code: 0, enhanced: null, text: 'no result from the LMTP client', outcome: 'tempfail',
    }));
    // Every final result is journaled before this returns, and so before the ack: those after
    // the data as each arrives, refusals at RCPT at the end. Commits are grouped (journal.ts).
    const journaled: Promise<void>[] = [];
    const written = new Set<string>();
    const journal = (rs: RecipientResult[]): void => {
      for (const r of rs) written.add(r.recipient);
      journaled.push(this.#journal.add(h.id, rs, this.#now()).catch((err: unknown) => {
        // A journal closed at stop or a failing disk: the message may be delivered twice if the
        // ack is lost too (docs/architecture.md names this window).
        this.#log('journal.failed', { id: h.id, recipients: rs.map((r) => r.recipient), error: (err as Error).message });
      }));
    };
    if (todo.length > 0 && this.#doveadm) {
      const asked = await this.#askDovecot(h.id, h.attempt, todo, this.#doveadm);
      if ('deferred' in asked) {
        msg.abandon();
        return { results: answer(asked.deferred), fromJournal: false };
      }
      for (const r of asked.found) known.set(r.recipient, r);
      journal(asked.found);
      await Promise.all(journaled);
      todo = todo.filter((r) => !known.has(r));
    }
    if (todo.length === 0) {
      msg.abandon();
      this.#stats.fromJournal++;
      return { results: answer([]), fromJournal: true };
    }
    const tap = this.#logSubject ? tapHeaders(msg) : null;
    const client = this.#idle.pop() ?? new LmtpClient(this.#target, { localName: this.#cfg.name, bdatChunkBytes: LMTP_BDAT_BYTES });
    // With the doveadm check on, the recipients are marked unsettled as the body starts, committed
    // before its end (so before the final dot): a crash or a lost reply from then on leaves the mark.
    let marking: Promise<void> | null = null;
    const mark = this.#doveadm ? (): Promise<void> => (marking = this.#journal.mark(h.id, todo, this.#now())) : undefined;
    let fresh: RecipientResult[];
    try {
      // Our Received (unless turned off) and our Authentication-Results, then the message as it
      // was verified (inbound.ts), with fields that claim our authserv-id renamed: same size.
      const auth = authResultsHeader(this.#cfg.authservId, h);
      const head = this.#cfg.traceHeader ? Buffer.concat([traceHeader(this.#cfg.name, h), auth]) : auth;
      const body = renameForged(tap?.body ?? msg, this.#cfg.authservId, (n) => this.#log('deliver.forged-results', { id: h.id, renamed: n }));
      const replies = (await client.deliver({ sender: h.sender, recipients: todo }, withTrace(head, body, mark), {
        size: h.size + head.byteLength,
        eightBit: true,
        // Journal each recipient the moment Dovecot answers for it: with several recipients,
        // Dovecot has stored the first copy before it answers for the last one.
        onFinal: (r) => journal([alone(resultOf(r))]),
      })).map(resultOf);
      fresh = replies.map(alone);
      if (!msg.failure) journal(fresh.filter((r) => !written.has(r.recipient)));
      // A tempfail the target answered (or one before the dot) says it stored nothing: no mark
      // left, so the next attempt delivers without asking. An unknown outcome keeps its mark.
      const marked = marking !== null && await (marking as Promise<void>).then(() => true, () => false);
      if (marked) {
        const settled = replies.filter((r) => r.outcome === 'tempfail' && !unknownOutcome(r)).map((r) => r.recipient);
        journaled.push(this.#journal.unmark(h.id, settled).catch(() => undefined));
        // The mark says from now on when the outcome became unknown (see #askDovecot).
        const unknown = replies.filter(unknownOutcome).map((r) => r.recipient);
        if (unknown.length > 0) journaled.push(this.#journal.mark(h.id, unknown, this.#now()).catch(() => undefined));
      }
    } finally {
      if (this.#closed) void client.close();
      else this.#idle.push(client);
      await Promise.all(journaled);
    }
    if (!msg.failure) {
      // Any SMTP reply shows the target answering; only local errors (code 0) say it did not.
      const noReply = fresh.find((r) => r.code === 0);
      this.#watch.seen(fresh.some((r) => r.code > 0), noReply?.text ?? null);
      for (const r of fresh) this.#stats[r.outcome === 'delivered' ? 'delivered' : r.outcome]++;
    }
    const note = tap ? { subject: await tap.subject() } : {};
    return { results: answer(fresh), fromJournal: false, note };
  }

  /**
   * What became of these recipients of `id`, for a bounce task of a message the object gave up
   * unanswered (its ack may have been lost, not its delivery): the final results the journal
   * knows, and, with the doveadm check on, those Dovecot holds though no reply said so (then
   * journaled). A delivery of `id` still running from an earlier connection is waited for first.
   * `unknown`: Dovecot could not say; nothing may be bounced then.
   */
  readonly known = async (id: string, recipients: string[]): Promise<{ results: Map<string, RecipientResult> } | { unknown: string }> => {
    await this.#running.idle(id);
    const known = this.#journal.lookup(id, recipients);
    const todo = recipients.filter((r) => !known.has(r));
    if (todo.length > 0 && this.#doveadm) {
      const asked = await this.#askDovecot(id, 0, todo, this.#doveadm, 'bouncing');
      if ('deferred' in asked) return { unknown: asked.deferred[0]?.text ?? 'doveadm: no answer' };
      for (const r of asked.found) known.set(r.recipient, r);
      await this.#journal.add(id, asked.found, this.#now()).catch((err: unknown) => {
        this.#log('journal.failed', { id, recipients: asked.found.map((r) => r.recipient), error: (err as Error).message });
      });
    }
    return { results: known };
  };

  /**
   * The recipients of `todo` whose last attempt ended unknown are searched for in Dovecot:
   * those found are delivered (their results, to journal), the rest are delivered again. When
   * Dovecot cannot say, nothing is delivered: every recipient of `todo` is deferred.
   */
  async #askDovecot(id: string, attempt: number, todo: string[], doveadm: Doveadm, next: 'delivering' | 'bouncing' = 'delivering'): Promise<{ found: RecipientResult[] } | { deferred: RecipientResult[] }> {
    const owed = this.#journal.unsettled(id, todo);
    if (owed.size === 0) return { found: [] };
    const since = Math.min(Date.now(), ...owed.values());
    const stored = new Map<string, boolean>();
    try {
      for (const [r, yes] of await doveadm.stored(id, [...owed.keys()], since)) stored.set(r, yes);
      // Dovecot stores what it read to the final dot even when its client is gone. A search
      // right after a lost reply may run before that save ends: one not found that soon is
      // asked about again once SETTLE_MS have passed since the outcome became unknown.
      const recent = [...owed].filter(([r, at]) => !stored.get(r) && this.#now() - at < SETTLE_MS);
      if (recent.length > 0) {
        const wait = Math.min(SETTLE_MS, SETTLE_MS - (this.#now() - Math.max(...recent.map(([, at]) => at))));
        await new Promise((r) => setTimeout(r, Math.max(0, wait)));
        for (const [r, yes] of await doveadm.stored(id, recent.map(([r]) => r), since)) stored.set(r, yes);
      }
    } catch (err) {
      const error = (err as Error).message;
      this.#log('doveadm.failed', { id, attempt, recipients: [...owed.keys()], error });
      const text = `doveadm: ${error}; the reply to an earlier attempt was lost: not delivered again until Dovecot says whether it stored that one`;
      return { deferred: todo.map((recipient) => alone({ recipient, code: 0, enhanced: null, text, outcome: 'tempfail' })) };
    }
    const found: RecipientResult[] = [];
    for (const recipient of owed.keys()) {
      const user = doveadm.userOf(recipient);
      if (!stored.get(recipient)) {
        this.#log('deliver.not-found', { id, attempt, recipient, user, reason: `the reply to an earlier attempt was lost and Dovecot holds no copy: ${next}` });
        continue;
      }
      this.#log('deliver.found', { id, attempt, recipient, user, reason: `the reply to an earlier attempt was lost; Dovecot holds the copy: not ${next === 'delivering' ? 'delivered again' : 'bounced'}` });
      found.push(alone({ recipient, code: 250, enhanced: '2.0.0', text: `<${recipient}> found in ${user}'s mailboxes after a lost reply (doveadm search)`, outcome: 'delivered' }));
    }
    return { found };
  }

  /** QUIT to idle connections (a hung target gets at most `ms`); later deliveries fail. */
  async close(ms = 2_000): Promise<void> {
    this.#closed = true;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(this.#idle.splice(0).map((c) => c.close())),
      new Promise((r) => { timer = setTimeout(r, ms); }),
    ]);
    clearTimeout(timer);
  }
}
