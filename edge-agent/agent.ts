// The edge-agent: keeps one outbound WebSocket to the queue object, forever,
// and replays each pushed message into the LMTP target (deliver.ts). Also owns
// what lives across connections: the journal and its pruning, the target's
// health, the metrics, and the graceful stop.
import { parseTarget, type Target } from '../lmtp-proxy/target.ts';
import { backoffMs, pause, resetsBackoff } from './session/backoff.ts';
import type { FetchLimits } from './session/body-fetch.ts';
import { Bouncer, homeNames } from './bounce/bounce.ts';
import type { AgentConfig } from './agent-config.ts';
import { Deliverer } from './delivery/deliver.ts';
import { deliveryLines, relayName } from './ops/delivery-log.ts';
import { hideHome } from './bounce/dsn.ts';
import { TargetWatch, type TargetStatus } from './ops/health.ts';
import { connectHint } from './session/hints.ts';
import { JOURNAL_RETENTION_MS, Journal } from './delivery/journal.ts';
import type { Logger } from './ops/log.ts';
import { AgentMetrics } from './ops/metrics.ts';
import { probeTarget } from './ops/probe.ts';
import { QueueStatus } from './ops/queue-status.ts';
import { RecipientsSource } from './session/recipients.ts';
import { AgentSession, type SessionHooks, type Settled, type SessionOutcome } from './session/session.ts';

export interface AgentOptions {
  /** Journal entries older than this are pruned (default 7 days). */
  journalRetentionMs?: number;
  /** How often the journal is pruned while running (default 1 h; also once at start). */
  pruneEveryMs?: number;
  /** Log each delivery's decoded Subject (default false: no header is ever looked at). */
  logSubject?: boolean;
  /** Probe the LMTP target when no delivery talked to it for this long (default 30 s). */
  probeEveryMs?: number;
  /** The target counts as up if it answered within this window (default 90 s). */
  targetFreshMs?: number;
  /** The clock for journal entries and pruning; tests move it. */
  now?: () => number;
  /** How often the recipients file is checked for changes (default 2 s). */
  recipientsPollMs?: number;
  /** Timeouts of each body fetch (messages in R2; default body-fetch.ts's FETCH_LIMITS). */
  fetchLimits?: FetchLimits;
}

export interface Health {
  ok: boolean;
  session: boolean;
  target: TargetStatus;
  /** Why not ok, for people. */
  reasons: string[];
}

export interface Agent {
  /** Resolves when the first session is up. */
  readonly connected: Promise<void>;
  readonly stats: AgentStats;
  readonly metrics: AgentMetrics;
  health(): Health;
  /**
   * Stops taking messages, lets in-flight ones finish (up to graceMs), hands back the rest
   * (nack shutdown), disconnects. Resolves within about graceMs + 12 s.
   */
  stop(graceMs?: number): Promise<void>;
}

export interface AgentStats {
  sessions: number;
  delivered: number;
  tempfail: number;
  permfail: number;
  fromJournal: number;
}

const EVENT: Record<SessionOutcome, string> = {
  acked: 'deliver.acked',
  journal: 'deliver.journal',
  corrupt: 'deliver.corrupt',
  unavailable: 'deliver.error',
  shutdown: 'deliver.handed-back',
  disconnected: 'deliver.disconnected',
};

/**
 * The per-message summary (debug level; the delivery.* lines carry each recipient's result):
 * never content; recipients' addresses only where a result was not delivered.
 */
function deliveryFields(s: Settled): Record<string, unknown> {
  const f: Record<string, unknown> = { id: s.id, attempt: s.attempt, recipients: s.recipients, outcome: s.outcome, bytes: s.bytes, ms: s.ms };
  if (s.results) {
    f.results = s.results.map((r) => `${r.outcome}:${r.code}`);
    const notes = s.results.filter((r) => r.outcome !== 'delivered').map((r) => ({ recipient: r.recipient, text: r.text }));
    if (notes.length > 0) f.notes = notes;
  }
  if (s.error !== null) f.error = s.error;
  return { ...f, ...s.note };
}

export function startAgent(cfg: AgentConfig, stateDir: string, log: Logger, opts: AgentOptions = {}): Agent {
  const now = opts.now ?? Date.now;
  const target: Target = parseTarget(cfg.target);
  // Read before anything opens: a bad recipients file is a ConfigError and the agent does not start.
  const recipients = new RecipientsSource({ file: cfg.recipientsFile, delimiter: cfg.recipientDelimiter, log, pollMs: opts.recipientsPollMs });
  const journal = new Journal(stateDir, opts.journalRetentionMs ?? JOURNAL_RETENTION_MS);
  let journalOpen = true;
  const stats: AgentStats = { sessions: 0, delivered: 0, tempfail: 0, permfail: 0, fromJournal: 0 };
  let stopping = false;
  const abort = new AbortController();
  // One connection per queue shard (docs/scaling.md); with one shard, the URL as configured.
  const sessions: (AgentSession | null)[] = Array.from({ length: cfg.shards }, () => null);
  const shardUrl = (i: number): string => (cfg.shards === 1 ? cfg.workerUrl : `${cfg.workerUrl}?shard=${i}`);
  const allUp = (): boolean => sessions.every((s) => s?.up ?? false);
  let firstUp: () => void = () => {};
  const connected = new Promise<void>((r) => { firstUp = r; });

  const watch = new TargetWatch(() => probeTarget(target, cfg.name), {
    probeEveryMs: opts.probeEveryMs ?? 30_000, freshMs: opts.targetFreshMs ?? 90_000,
  });
  const deliverer = new Deliverer({ cfg, target, journal, watch, log, stats, logSubject: opts.logSubject ?? false, now });
  const metrics = new AgentMetrics({
    inFlight: () => deliverer.running,
    journalEntries: () => (journalOpen ? journal.size() : 0),
    sessionUp: allUp,
    targetUp: () => watch.up(),
    targetLastOkAt: () => watch.status().lastOkAt,
  });
  watch.onProbe = (ok) => metrics.probes.inc(ok ? 'ok' : 'failed');
  // With the Worker's read-only STATUS_TOKEN: the queue's numbers in the same scrape.
  if (cfg.statusToken !== null) {
    const status = new QueueStatus({ workerUrl: cfg.workerUrl, token: cfg.statusToken, log });
    status.register(metrics.registry);
    metrics.onScrape(() => status.refresh());
  }
  let targetDown = false;
  watch.onChange = (ok, error) => {
    log(ok ? 'target.up' : 'target.down', ok ? { target: cfg.target } : { target: cfg.target, error });
    if (!ok) targetDown = true;
    else if (targetDown) {
      // Back after being down (a probe or a delivery saw it): the object retries its deferred
      // messages now instead of at their backoff time. Once per down→up, on every live session.
      targetDown = false;
      const told = sessions.filter((x) => x?.retry() ?? false).length;
      log('target.retry', { sessions: told });
    }
  };
  const bouncer = cfg.bounceRelay === null ? null : new Bouncer({
    relay: cfg.bounceRelay, journal, log, reportingMta: cfg.reportingMta, localName: cfg.reportingMta, now,
    // The LMTP target's name is in many a local error (connect ECONNREFUSED ...): never in a DSN.
    hide: homeNames(target),
    // A message given up unanswered may be in the mailbox, its ack lost: asked before any DSN.
    known: deliverer.known, onDelivered: (s) => settled(s),
  });
  if (bouncer && hideHome(cfg.reportingMta, homeNames(target)) !== cfg.reportingMta) {
    // The one home name a DSN cannot leave out: it is the DSN's Reporting-MTA and From domain.
    log('bounce.private-name', {
      reportingMta: cfg.reportingMta,
      hint: 'every DSN names it: set reportingMta (MAILBRIDGE_REPORTING_MTA) to the public name mail from this host goes out as',
    });
  }
  const hooks: SessionHooks = {
    recipients: () => recipients.frames, ...(bouncer ? { bounce: bouncer.run } : {}),
    ...(opts.fetchLimits ? { fetchLimits: opts.fetchLimits } : {}),
  };
  recipients.onChange = (frames) => { for (const x of sessions) x?.publishRecipients(frames); };
  recipients.start();

  const prune = (): void => {
    if (!journalOpen) return;
    const removed = journal.prune(now());
    if (removed === 0) return;
    metrics.pruned.inc('', removed);
    log('journal.pruned', { removed, entries: journal.size() });
  };
  prune();
  const pruner = setInterval(prune, opts.pruneEveryMs ?? 60 * 60_000);
  pruner.unref();
  watch.start();

  const relay = relayName(target);
  const settled = (s: Settled): void => {
    metrics.settled(s);
    log(EVENT[s.outcome], deliveryFields(s));
    // Postfix's status= lines: one per recipient of an attempt that ended (delivery-log.ts).
    for (const l of deliveryLines(s, relay, Date.now())) log(l.event, l.fields);
  };

  // One connection to one shard, again and again until stopped. Each state change is logged
  // once: a streak of failed attempts with the same error is one 'connect.failed' line (the
  // metrics count every attempt), and its end one 'connect.recovered'.
  const loop = async (shard: number): Promise<void> => {
    const shardCfg: AgentConfig = { ...cfg, workerUrl: shardUrl(shard) };
    const where = cfg.shards > 1 ? { shard } : {};
    let attempts = 0;               // since the last healthy session (backoff.ts)
    let failedConnects = 0;         // of those, the ones that never got a welcome
    let reported: string | null = null;  // the error last logged in this streak
    let wait = 0;
    while (!stopping) {
      if (wait > 0) await pause(wait, abort.signal);
      if (stopping) break;
      const s = new AgentSession(shardCfg, deliverer.deliver, log, settled, hooks);
      sessions[shard] = s;
      try {
        await s.ready;
      } catch (err) {
        if (stopping) break;
        attempts++;
        failedConnects++;
        metrics.connectFailures.inc();
        wait = backoffMs(attempts, cfg.maxReconnectMs);
        const error = err instanceof Error ? err.message : String(err);
        if (error !== reported) {
          const hint = connectHint(error, shardCfg.workerUrl);
          log('connect.failed', { attempt: failedConnects, error, ...(hint ? { hint } : {}), retryInMs: wait, ...where });
        }
        reported = error;
        continue;
      }
      const upAt = Date.now();
      if (reported !== null) log('connect.recovered', { failedAttempts: failedConnects, ...where });
      failedConnects = 0;
      reported = null;
      stats.sessions++;
      metrics.sessions.inc();
      if (stats.sessions > 1) metrics.reconnects.inc();
      firstUp();
      const end = await s.closed;
      if (end.heartbeatLost) metrics.heartbeatLost.inc();
      const upMs = Date.now() - upAt;
      attempts = resetsBackoff({ upMs, refusedByObject: end.refusedByObject, acks: end.acks }) ? 1 : attempts + 1;
      wait = stopping ? 0 : backoffMs(attempts, cfg.maxReconnectMs);
      log('session.closed', {
        code: end.code, reason: end.reason, heartbeatLost: end.heartbeatLost, upMs, acks: end.acks,
        ...(stopping ? {} : { retryInMs: wait }), ...where,
      });
    }
  };
  const running = Promise.all(sessions.map((_, i) => loop(i)));
  let stopped: Promise<void> | undefined;  // stop() is idempotent

  const health = (): Health => {
    const up = allUp();
    const target = watch.status();
    const reasons: string[] = [];
    if (!up) {
      const down = sessions.flatMap((x, i) => (x?.up ? [] : [i]));
      reasons.push(cfg.shards === 1 ? 'no WebSocket session to the queue' : `no WebSocket session to shard ${down.join(', ')}`);
    }
    if (!target.ok) {
      const last = target.lastOkAt === null ? 'never' : new Date(target.lastOkAt).toISOString();
      reasons.push(`LMTP target not answering (${target.error ?? 'no answer recently'}; last answered: ${last})`);
    }
    return { ok: reasons.length === 0, session: up, target, reasons };
  };

  return {
    connected,
    stats,
    metrics,
    health,
    stop(graceMs = 30_000) {
      stopped ??= (async () => {
        stopping = true;
        abort.abort(new Error('agent stopping'));
        clearInterval(pruner);
        watch.stop();
        recipients.stop();
        await Promise.all(sessions.map((x) => x?.close(graceMs)));
        await running;
        await deliverer.close();
        journalOpen = false;
        journal.close();
        metrics.close();
        log('agent.stopped', { ...stats });
      })();
      return stopped;
    },
  };
}
