// The edge-agent: keeps one outbound WebSocket to the queue object, forever,
// and replays each pushed message into the LMTP target.
import pRetry from 'p-retry';
import type { RecipientResult } from '../protocol/wire.ts';
import { LmtpClient } from '../lmtp-proxy/client.ts';
import { parseTarget, type Target } from '../lmtp-proxy/target.ts';
import type { AgentConfig } from './config.ts';
import type { InboundMessage } from './inbound.ts';
import { Journal } from './journal.ts';
import type { Logger } from './log.ts';
import { AgentSession } from './session.ts';
import { traceHeader } from './trace.ts';

export interface Agent {
  /** Resolves when the first session is up. */
  readonly connected: Promise<void>;
  readonly stats: AgentStats;
  /** Stops taking messages, finishes in-flight ones (up to graceMs), disconnects. */
  stop(graceMs?: number): Promise<void>;
}

export interface AgentStats {
  sessions: number;
  delivered: number;
  tempfail: number;
  permfail: number;
  fromJournal: number;
}

async function* withTrace(head: Uint8Array | null, body: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  if (head) yield head;
  yield* body;
}

export function startAgent(cfg: AgentConfig, stateDir: string, log: Logger): Agent {
  const target: Target = parseTarget(cfg.target);
  const journal = new Journal(stateDir);
  journal.prune();
  const stats: AgentStats = { sessions: 0, delivered: 0, tempfail: 0, permfail: 0, fromJournal: 0 };
  const idle: LmtpClient[] = [];
  let stopping = false;
  const abort = new AbortController();
  let session: AgentSession | null = null;
  let firstUp: () => void = () => {};
  const connected = new Promise<void>((r) => { firstUp = r; });

  // Deliveries by message id. A delivery outlives the connection it came on: when the
  // object redelivers the id on a new connection while the old delivery still runs, the
  // new one waits for it and then answers from the journal, never delivering twice.
  const deliveries = new Map<string, Promise<unknown>>();
  const deliver = async (msg: InboundMessage): Promise<RecipientResult[]> => {
    const id = msg.header.id;
    const before = deliveries.get(id);
    const task = (async () => {
      if (before) {
        log('deliver.wait', { id, reason: 'still being delivered from an earlier connection' });
        await before.catch(() => undefined);
      }
      return deliverOnce(msg);
    })();
    deliveries.set(id, task);
    try {
      return await task;
    } finally {
      if (deliveries.get(id) === task) deliveries.delete(id);
    }
  };

  const deliverOnce = async (msg: InboundMessage): Promise<RecipientResult[]> => {
    const h = msg.header;
    const known = journal.lookup(h.id, h.recipients);
    const todo = h.recipients.filter((r) => !known.has(r));
    let fresh: RecipientResult[] = [];
    if (todo.length === 0) {
      msg.abandon();
      stats.fromJournal++;
      log('deliver.journal', { id: h.id, recipients: h.recipients.length });
    } else {
      // Idle connections are kept (one per parallel delivery) and reused after an RSET.
      const client = idle.pop() ?? new LmtpClient(target, { localName: cfg.name });
      try {
        const head = cfg.traceHeader ? traceHeader(cfg.name, h) : null;
        fresh = await client.deliver({ sender: h.sender, recipients: todo }, withTrace(head, msg), {
          size: h.size + (head?.byteLength ?? 0),
          eightBit: true,
        });
      } finally {
        idle.push(client);
      }
      // Journal before the ack: from here on a redelivery is answered from the journal.
      if (!msg.failure) journal.record(h.id, fresh);
      for (const r of fresh) stats[r.outcome === 'delivered' ? 'delivered' : r.outcome]++;
    }
    return h.recipients.map((r) => known.get(r) ?? fresh.find((x) => x.recipient === r) ?? {
      recipient: r, code: 0, enhanced: null, text: 'no result from the LMTP client', outcome: 'tempfail',
    });
  };

  const loop = async (): Promise<void> => {
    while (!stopping) {
      const s = await pRetry(async () => {
        if (stopping) return null;
        const next = new AgentSession(cfg, deliver, log);
        session = next;
        await next.ready;
        return next;
      }, {
        retries: Number.POSITIVE_INFINITY,
        minTimeout: 500,
        maxTimeout: cfg.maxReconnectMs,
        factor: 2,
        randomize: true,
        signal: abort.signal,
        onFailedAttempt: ({ error, attemptNumber }) => log('connect.failed', { attempt: attemptNumber, error: error.message }),
      }).catch(() => null);
      if (!s) break;
      stats.sessions++;
      firstUp();
      const end = await s.closed;
      log('session.closed', { code: end.code, reason: end.reason });
    }
  };
  const running = loop();
  let stopped: Promise<void> | undefined;  // stop() is idempotent

  return {
    connected,
    stats,
    stop(graceMs = 30_000) {
      stopped ??= (async () => {
        stopping = true;
        abort.abort(new Error('agent stopping'));
        const s: AgentSession | null = session;
        if (s) await s.close(graceMs);
        await running;
        await Promise.all(idle.splice(0).map((c) => c.close()));
        journal.close();
        log('agent.stopped', { ...stats });
      })();
      return stopped;
    },
  };
}
