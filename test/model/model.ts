// The model: what the queue should do, as plain data and pure functions, no I/O. The runner
// (run.ts) applies each command here and to the real RelayQueue, then checks that the two
// agree. What the object decides by itself (which agent a message is leased to, an expiry it
// finds at lease time) the runner observes and the model accepts only when it is allowed
// (allowLease, allowExpiry); everything else the model predicts exactly.

/** The queue's settings for model runs (the Worker's vars, run.ts): short, so the clock reaches them. */
export const CFG = {
  firstRetryMs: 60_000,
  maxRetryMs: 60_000,
  maxAgeMs: 600_000,
  retentionMs: 3_600_000,
  dedupeWindowMs: 7_200_000,
  maxUnsettledLeases: 3,
  affinityMs: 120_000,
  /** Small bodies stay in the object (issue #24): run.ts's `head` and below inline, `head+1` and `large` in R2. */
  inlineMaxBytes: 64 * 1024,
} as const;

export type LiveState = 'queued' | 'in-flight' | 'deferred' | 'hold' | 'bouncing' | 'bounced' | 'dead-letter';
export type Gone = 'delivered' | 'deleted' | 'purged' | 'pruned';
export type Failure = 'refused' | 'expired' | 'attempts';

export interface MMsg {
  /** Order of acceptance in this sequence (the commands name messages by it). */
  n: number;
  id: string;
  sender: string;
  rcpt: string;
  /** The sender's bytes (after Cloudflare's block): what delivery and export must give back. */
  body: Buffer;
  /** sender, recipient and body: what makes two posts one message. */
  key: string;
  state: LiveState | Gone;
  /** The agent holding it (in-flight) or its bounce task (bouncing); null: none. */
  lease: string | null;
  /** queued: not leased before; deferred / bouncing: next attempt at. 0: now. */
  notBefore: number;
  receivedAt: number;
  retryFrom: number;
  leaseEnds: number;
  /** Until then only `lastAgent` may lease it (its lease ended unanswered: that agent may have delivered it). */
  affinityUntil: number;
  lastAgent: string | null;
  settledAt: number | null;
  failure: Failure | null;
  /** Its recipient was refused for good (the row keeps no pending recipient). */
  refused: boolean;
  ackedAt: number | null;
  /** Copies the agent delivered (read the body and said 250 to it), and those whose answer was lost. */
  deliveries: number;
  lostReplies: number;
  /** Bounce tasks answered `sent`, and bounce frames seen for it. */
  bouncesSent: number;
}

export interface MAgent {
  name: string;
  session: string;
  window: number;
  bounces: boolean;
  /** It said it is shutting down (a shutdown nack): nothing more is leased to it. */
  draining?: boolean;
}

export interface Model {
  now: number;
  msgs: MMsg[];
  agents: Map<string, MAgent>;
  /** What the last hello said about a bounce relay (the object's AGENTS_BOUNCE). */
  agentsBounce: boolean;
  /** The recipients list in force; null: none (every recipient accepted). */
  list: Set<string> | null;
  /** The lost-reply windows: deliveries allowed beyond one per recipient. */
  log: string[];
}

export function newModel(now: number): Model {
  return { now, msgs: [], agents: new Map(), agentsBounce: false, list: null, log: [] };
}

const owed = (m: MMsg): boolean => m.state === 'queued' || m.state === 'in-flight' || m.state === 'deferred' || m.state === 'hold';
export const live = (m: MMsg): boolean => m.state !== 'delivered' && m.state !== 'deleted' && m.state !== 'purged' && m.state !== 'pruned';

/** What an ingest of `key` should answer: the earlier copy it is (`dup`), or a new message. */
export function dedupe(model: Model, key: string): { dup: MMsg[] } {
  const dup = model.msgs.filter((m) => m.key === key && (
    owed(m) || (m.state === 'delivered' && m.ackedAt !== null && m.ackedAt >= model.now - CFG.dedupeWindowMs)));
  return { dup };
}

export function accept(model: Model, m: Omit<MMsg, 'n' | 'state' | 'lease' | 'notBefore' | 'receivedAt' | 'retryFrom' | 'leaseEnds' | 'affinityUntil' | 'lastAgent' | 'settledAt' | 'failure' | 'refused' | 'ackedAt' | 'deliveries' | 'lostReplies' | 'bouncesSent'>): MMsg {
  const msg: MMsg = {
    ...m, n: model.msgs.length, state: 'queued', lease: null, notBefore: 0, receivedAt: model.now, retryFrom: model.now,
    leaseEnds: 0, affinityUntil: 0, lastAgent: null, settledAt: null, failure: null, refused: false, ackedAt: null, deliveries: 0, lostReplies: 0, bouncesSent: 0,
  };
  model.msgs.push(msg);
  return msg;
}

/** Failed for good: a bounce is owed, or, without a relay or to `<>`, dead-letter. */
export function fail(model: Model, m: MMsg, why: Failure): void {
  m.state = m.sender !== '' && model.agentsBounce ? 'bouncing' : 'dead-letter';
  m.failure = why;
  m.lease = null;
  m.notBefore = 0;
  m.leaseEnds = 0;
  m.settledAt = model.now;
  if (why === 'refused') m.refused = true;
}

export type Answer = 'delivered' | 'tempfail' | 'permfail';

/** The agent's answer about a message it holds. */
export function settle(model: Model, m: MMsg, a: Answer): void {
  m.lease = null;
  if (a === 'delivered') {
    m.state = 'delivered';
    m.ackedAt = model.now;
    return;
  }
  if (a === 'permfail') return fail(model, m, 'refused');
  if (model.now - m.retryFrom >= CFG.maxAgeMs) return fail(model, m, 'expired');
  m.state = 'deferred';
  m.leaseEnds = 0;
  m.notBefore = Math.min(model.now + CFG.firstRetryMs, m.retryFrom + CFG.maxAgeMs);
}

/** The agent's answer about a bounce task it holds. */
export function bounced(model: Model, m: MMsg, status: 'sent' | 'deferred' | 'failed'): void {
  m.lease = null;
  if (status === 'sent') {
    m.state = 'bounced';
    m.settledAt = model.now;
    m.bouncesSent++;
  } else if (status === 'failed') {
    m.state = 'dead-letter';
  } else {
    const since = m.settledAt ?? model.now;
    if (model.now - since >= CFG.maxAgeMs) m.state = 'dead-letter';
    else m.notBefore = model.now + Math.min(CFG.maxRetryMs, Math.max(CFG.firstRetryMs, model.now - since));
  }
}

/** An agent's connection ended: what it held goes back, spaced out, given up after too many. */
export function disconnect(model: Model, name: string): void {
  model.agents.delete(name);
  for (const m of model.msgs) {
    if (m.lease !== name) continue;
    m.lease = null;
    if (m.state !== 'in-flight') continue;  // a bounce task: simply offered again
    m.state = 'queued';
    m.affinityUntil = model.now + CFG.affinityMs;
    m.leaseEnds++;
    m.notBefore = m.leaseEnds <= 1 ? 0 : model.now + Math.min(300_000, 1000 * 2 ** Math.min(m.leaseEnds - 1, 20));
    if (m.leaseEnds >= CFG.maxUnsettledLeases) fail(model, m, 'attempts');
  }
}

/** Every agent gone at once (the object restarted): their leases end as in disconnect(). */
export function restart(model: Model): void {
  for (const name of [...model.agents.keys()]) disconnect(model, name);
}

export function hello(model: Model, a: MAgent): void {
  model.agents.set(a.name, a);
  model.agentsBounce = a.bounces;
  // Without a relay, bounce tasks no one holds go to the operator.
  if (!a.bounces) for (const m of model.msgs) if (m.state === 'bouncing' && m.lease === null) m.state = 'dead-letter';
}

/** The clock moved: due deferred messages are queued again, bounced ones past retention removed. */
export function tick(model: Model, ms: number): void {
  model.now += ms;
  for (const m of model.msgs) {
    if (m.state === 'deferred' && m.notBefore <= model.now) {
      m.state = 'queued';
      m.notBefore = 0;
    }
    if (m.state === 'bounced' && (m.settledAt ?? 0) < model.now - CFG.retentionMs) m.state = 'pruned';
  }
}

/** Too old to lease: the pump (and, once fixed, the alarm) fails it as expired. */
export function tooOld(model: Model, m: MMsg): boolean {
  return model.now - m.retryFrom >= CFG.maxAgeMs + CFG.firstRetryMs;
}

export const leasable = (model: Model, m: MMsg): boolean => m.state === 'queued' && m.notBefore <= model.now;
export const bounceable = (model: Model, m: MMsg): boolean =>
  m.state === 'bouncing' && m.lease === null && m.notBefore <= model.now;

/** Why the object may not have leased `m` to `a` now; null: it may. */
export function allowLease(model: Model, m: MMsg, a: MAgent): string | null {
  if (!leasable(model, m)) return `message ${m.n} leased in state ${m.state} (not before ${m.notBefore}, now ${model.now})`;
  if (tooOld(model, m)) return `message ${m.n} leased past its age limit`;
  if (held(model, a.name) >= a.window) return `agent ${a.name} leased beyond its window ${a.window}`;
  if (a.draining) return `message ${m.n} leased to ${a.name}, which is shutting down`;
  if (!affine(model, m, a.name)) return `message ${m.n} leased to ${a.name} while kept for ${m.lastAgent} until ${m.affinityUntil}`;
  return null;
}

/** Whether agent `name` may lease `m` now as far as affinity goes. */
export function affine(model: Model, m: MMsg, name: string): boolean {
  return m.affinityUntil <= model.now || m.lastAgent === name;
}

export function allowBounce(model: Model, m: MMsg, a: MAgent): string | null {
  if (!bounceable(model, m)) return `bounce of message ${m.n} leased in state ${m.state}${m.lease ? ` held by ${m.lease}` : ''}`;
  if (!a.bounces) return `bounce of message ${m.n} leased to ${a.name}, which has no bounce relay`;
  if (m.sender === '') return `bounce of message ${m.n} to the null sender`;
  if (held(model, a.name) >= a.window) return `agent ${a.name} leased a bounce beyond its window ${a.window}`;
  if (a.draining) return `bounce of message ${m.n} leased to ${a.name}, which is shutting down`;
  return null;
}

export function held(model: Model, name: string): number {
  return model.msgs.filter((m) => m.lease === name).length;
}

/**
 * Work the object left undone although an agent could take it (every state change that makes
 * work available pumps, and the model's clock moves only when a test moves it).
 */
export function idleWork(model: Model): string | null {
  for (const a of model.agents.values()) {
    if (held(model, a.name) >= a.window || a.draining) continue;
    const m = model.msgs.find((x) => (leasable(model, x) && affine(model, x, a.name)) || (a.bounces && bounceable(model, x)));
    if (m) return `agent ${a.name} holds ${held(model, a.name)} of ${a.window} while message ${m.n} is ${m.state} and due`;
  }
  const old = model.msgs.find((x) => leasable(model, x) && tooOld(model, x));
  if (old) return `message ${old.n} is still queued past its age limit`;
  return null;
}

/** The real state a model message must show in the admin API (null: no row). */
export function realState(m: MMsg): LiveState | null {
  return live(m) ? (m.state as LiveState) : null;
}

/** Final checks of one message once everything settled (quiescence). */
export function finalProblems(m: MMsg): string[] {
  const out: string[] = [];
  const tag = `message ${m.n} (${m.id.slice(0, 8)}, from <${m.sender}>)`;
  if (m.deliveries > 1 + m.lostReplies) out.push(`${tag} delivered ${m.deliveries} times, ${m.lostReplies} lost replies`);
  if (m.bouncesSent > 1) out.push(`${tag} bounced ${m.bouncesSent} times`);
  if (m.bouncesSent > 0 && m.sender === '') out.push(`${tag} bounced to <>`);
  switch (m.state) {
    case 'delivered':
      if (m.deliveries < 1) out.push(`${tag} acked as delivered but no copy was delivered`);
      break;
    case 'bounced': case 'pruned':
      if (m.bouncesSent !== 1) out.push(`${tag} is ${m.state} with ${m.bouncesSent} bounces sent`);
      break;
    case 'dead-letter': case 'hold': case 'deleted': case 'purged':
      break;
    default:
      out.push(`${tag} still ${m.state} with a healthy agent and target`);
  }
  return out;
}
