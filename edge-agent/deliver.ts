// One message into the LMTP target, exactly once: the journal answers ids it
// already knows; otherwise the message streams into an (idle, reused) LMTP
// connection behind the trace header, and the final results are journaled
// before the caller may ack them. Results are shaped for the wire (wireResults) before
// they are journaled or acked: a target's long reply must never make an ack the object
// refuses, and a redelivery answered from the journal must not either.
import { wireResults, type RecipientResult } from '../protocol/wire.ts';
import { LmtpClient } from '../lmtp-proxy/client.ts';
import type { Target } from '../lmtp-proxy/target.ts';
import type { AgentConfig } from './config.ts';
import type { TargetWatch } from './health.ts';
import type { InboundMessage } from './inbound.ts';
import type { Journal } from './journal.ts';
import type { Logger } from './log.ts';
import type { Delivered } from './session.ts';
import { tapHeaders } from './subject.ts';
import { renameForged } from './forged-results.ts';
import { authResultsHeader, traceHeader } from './trace.ts';
import { PerKey } from './per-key.ts';

export interface DeliveryStats {
  delivered: number;
  tempfail: number;
  permfail: number;
  fromJournal: number;
}

/** One result as the wire takes it on its own: its text within MAX_RESULT_TEXT, codes valid. */
const alone = (r: RecipientResult): RecipientResult => wireResults([r])[0] ?? r;

async function* withTrace(head: Uint8Array, body: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  yield head;
  yield* body;
}

export class Deliverer {
  readonly #cfg: AgentConfig;
  readonly #target: Target;
  readonly #journal: Journal;
  readonly #watch: TargetWatch;
  readonly #log: Logger;
  readonly #stats: DeliveryStats;
  readonly #logSubject: boolean;
  readonly #now: () => number;
  /** Idle connections, one per parallel delivery at most, reused after an RSET. */
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
    const todo = h.recipients.filter((r) => !known.has(r));
    // The ack: each text within its own limit (as journaled), then all of them cut to fit one
    // frame. The same results in give the same ack out, so a redelivery gets the same answer.
    const answer = (fresh: RecipientResult[]): RecipientResult[] => wireResults(h.recipients.map((r) => known.get(r) ?? fresh.find((x) => x.recipient === r) ?? {
      recipient: r, code: 0, enhanced: null, text: 'no result from the LMTP client', outcome: 'tempfail',
    }));
    if (todo.length === 0) {
      msg.abandon();
      this.#stats.fromJournal++;
      return { results: answer([]), fromJournal: true };
    }
    const tap = this.#logSubject ? tapHeaders(msg) : null;
    const client = this.#idle.pop() ?? new LmtpClient(this.#target, { localName: this.#cfg.name });
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
    let fresh: RecipientResult[];
    try {
      // Our Received (unless turned off) and our Authentication-Results, then the message as it
      // was verified (inbound.ts), with fields that claim our authserv-id renamed: same size.
      const auth = authResultsHeader(this.#cfg.authservId, h);
      const head = this.#cfg.traceHeader ? Buffer.concat([traceHeader(this.#cfg.name, h), auth]) : auth;
      const body = renameForged(tap?.body ?? msg, this.#cfg.authservId, (n) => this.#log('deliver.forged-results', { id: h.id, renamed: n }));
      fresh = (await client.deliver({ sender: h.sender, recipients: todo }, withTrace(head, body), {
        size: h.size + head.byteLength,
        eightBit: true,
        // Journal each recipient the moment Dovecot answers for it: with several recipients,
        // Dovecot has stored the first copy before it answers for the last one.
        onFinal: (r) => journal([alone(r)]),
      })).map(alone);
      if (!msg.failure) journal(fresh.filter((r) => !written.has(r.recipient)));
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
