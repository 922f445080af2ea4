// The agent's metrics (GET /metrics): what it delivered, how fast, how its
// connection fares, the process's own numbers, and (with a status token) the
// queue's. Counters are fed from each settled delivery and session event; gauges
// are read from the live agent when scraped.
import { addProcessMetrics } from './process-metrics.ts';
import { Counter, Gauge, Histogram, Registry } from './prom.ts';
import { SESSION_OUTCOMES, type Settled } from '../session/session.ts';

export interface LiveState {
  inFlight(): number;
  journalEntries(): number;
  sessionUp(): boolean;
  targetUp(): boolean;
  /** ms since the epoch, or null when never. */
  targetLastOkAt(): number | null;
}

// Seconds, from a small local delivery up to the LMTP final-reply timeout range.
const LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class AgentMetrics {
  readonly registry = new Registry();
  readonly messages = this.registry.add(new Counter('mailbridge_agent_messages_total',
    'Messages answered, by outcome: acked (after an LMTP delivery), journal (acked from the journal), ' +
    'corrupt, unavailable, shutdown (nacks), disconnected (socket gone before the answer; redelivered)',
    { name: 'outcome', values: SESSION_OUTCOMES }));
  readonly recipients = this.registry.add(new Counter('mailbridge_agent_recipients_total',
    'Final LMTP results per recipient of acked messages', { name: 'outcome', values: ['delivered', 'tempfail', 'permfail'] }));
  readonly bytes = this.registry.add(new Counter('mailbridge_agent_delivered_bytes_total',
    'Bytes of messages acked after an LMTP delivery (message size, trace header not counted)'));
  readonly latency = this.registry.add(new Histogram('mailbridge_agent_delivery_duration_seconds',
    'From the message frame to its ack, for messages delivered over LMTP', LATENCY_BUCKETS));
  readonly sessions = this.registry.add(new Counter('mailbridge_agent_sessions_total', 'WebSocket sessions established (welcome received)'));
  readonly reconnects = this.registry.add(new Counter('mailbridge_agent_reconnects_total', 'Sessions established after an earlier one closed'));
  readonly connectFailures = this.registry.add(new Counter('mailbridge_agent_connect_failures_total', 'Failed attempts to open a session'));
  readonly heartbeatLost = this.registry.add(new Counter('mailbridge_agent_heartbeat_lost_total',
    'Connections dropped because the object stayed silent for 3 heartbeat intervals'));
  readonly pruned = this.registry.add(new Counter('mailbridge_agent_journal_pruned_total', 'Journal entries removed after the retention window'));
  readonly probes = this.registry.add(new Counter('mailbridge_agent_target_probes_total',
    'LHLO probes of the LMTP target, by result', { name: 'result', values: ['ok', 'failed'] }));

  /** Run before each scrape's render (the queue summary's read); each must resolve in bounded time. */
  readonly #beforeScrape: (() => Promise<void>)[] = [];
  readonly #stopProcess: () => void;

  constructor(live: LiveState) {
    const r = this.registry;
    this.#stopProcess = addProcessMetrics(r);
    r.add(new Gauge('mailbridge_agent_in_flight', 'Messages being delivered now', () => live.inFlight()));
    r.add(new Gauge('mailbridge_agent_journal_entries', 'Entries (message, recipient) in the delivery journal', () => live.journalEntries()));
    r.add(new Gauge('mailbridge_agent_session_up', '1 while a WebSocket session to the queue is up', () => (live.sessionUp() ? 1 : 0)));
    r.add(new Gauge('mailbridge_agent_target_up', '1 while the LMTP target answered recently', () => (live.targetUp() ? 1 : 0)));
    r.add(new Gauge('mailbridge_agent_target_last_ok_timestamp_seconds', 'When the LMTP target last answered (0: never)',
      () => (live.targetLastOkAt() ?? 0) / 1000));
  }

  settled(s: Settled): void {
    this.messages.inc(s.outcome);
    if (s.outcome !== 'acked') return;
    for (const r of s.results ?? []) this.recipients.inc(r.outcome);
    this.bytes.inc('', s.bytes);
    this.latency.observe(s.ms / 1000);
  }

  render(): string {
    return this.registry.render();
  }

  onScrape(f: () => Promise<void>): void {
    this.#beforeScrape.push(f);
  }

  /** What GET /metrics runs before render(): sources read from elsewhere (queue-status.ts). */
  async refresh(): Promise<void> {
    await Promise.all(this.#beforeScrape.map((f) => f()));
  }

  close(): void {
    this.#stopProcess();
  }
}
