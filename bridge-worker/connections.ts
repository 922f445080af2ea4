// Agent connections: the hello that opens one, and how one ends (closed, broken, silent, or
// closed by us for a violation): its leases go back to the queue, with its agent's affinity
// so that agent may answer from its journal first. Also what other jobs ask of the sockets.
import { FRAME, MAX_CHUNK_BYTES, PROTOCOL_VERSION, SUPPORTED_VERSIONS, type HelloFrame } from '../protocol/wire.ts';
import { onBounceCapability } from './bounce-tasks.ts';
import { now as clock } from './clock.ts';
import { readConfig } from './env.ts';
import { log } from './log.ts';
import { HELD_CREDIT_BYTES, pumpAll } from './pump.ts';
import { releaseDelay } from './retry-policy.ts';
import { attachment, send, type Attachment, type QueueContext } from './queue-context.ts';
import { giveUpUnsettled } from './settle.ts';

/** The first frame: the agent's name, window, credit and what it can do. False: a version not spoken here, the socket closed. */
export function onHello(q: QueueContext, ws: WebSocket, a: Attachment, frame: HelloFrame): boolean {
  if (!SUPPORTED_VERSIONS.includes(frame.v)) {
    log('agent.version', { session: a.session, v: frame.v });
    ws.close(1008, `protocol version ${frame.v} unsupported; this object speaks ${SUPPORTED_VERSIONS.join(' and ')}`);
    return false;
  }
  a.agent = frame.agent;
  a.window = frame.window;
  a.credit = Math.min(frame.credit, HELD_CREDIT_BYTES);
  a.bounces = frame.bounces === true;
  a.warnings = a.bounces && frame.warnings === true;
  a.version = frame.v;
  a.fetch = frame.fetch === true;
  a.fetchSession = frame.fetchSession === true;
  onBounceCapability(q, a.bounces);
  send(ws, { type: FRAME.WELCOME, v: PROTOCOL_VERSION, session: a.session, window: a.window, maxChunk: MAX_CHUNK_BYTES });
  log('agent.hello', { session: a.session, agent: a.agent, window: a.window, credit: a.credit });
  return true;
}

/** A connection that ended (closed, broken, silent): its leases released, the others pumped. */
export function disconnect(q: QueueContext, ws: WebSocket, why: string): void {
  const a = attachment(ws);
  if (a) log('agent.disconnected', { session: a.session, agent: a.agent, why, released: retire(q, ws, a) });
  try {
    ws.close(1000, 'bye');
  } catch {
    // already closed
  }
  pumpAll(q, ws);
}

export function violation(q: QueueContext, ws: WebSocket, a: Attachment | null, why: string): void {
  log('agent.violation', { session: a?.session ?? null, why });
  ws.close(1008, why);
  if (a) retire(q, ws, a);
}

/** A socket we are done with: never leased to again, its messages back in the queue. */
function retire(q: QueueContext, ws: WebSocket, a: Attachment): number {
  // A closed socket can stay in getWebSockets() until its TCP connection ends: mark it so no
  // pump leases to it again.
  a.closed = true;
  a.cursor = null;
  ws.serializeAttachment(a);
  q.lists.dropRecipientParts(a.session);
  // Its own agent may have delivered them (the ack lost on the way): give it the first
  // chance to answer from its journal before another agent delivers them again.
  const now = clock();
  const released = q.store.releaseSession(a.session, now + readConfig(q.env).affinityMs, notBefore(now));
  giveUpUnsettled(q, released);
  return released.length;
}

/** After a restart: leases of connections that did not survive it go back to the queue. */
export function recoverLeases(q: QueueContext): void {
  const live = q.state.getWebSockets().map((ws) => attachment(ws)?.session).filter((s) => s !== undefined);
  const released = q.store.releaseAllExcept(live, clock() + readConfig(q.env).affinityMs, notBefore(clock()));
  if (released.length > 0) log('lease.recovered', { released: released.length });
  giveUpUnsettled(q, released);
}

/**
 * A socket whose agent stopped sending heartbeats (a half-open path: the agent gone, the
 * socket not closed) is closed, so its leases go back to the queue instead of waiting on it.
 * Heartbeats are answered by the runtime; its timestamp of the last one tells.
 */
export function closeSilentAgents(q: QueueContext, now: number): void {
  const staleMs = readConfig(q.env).agentSilentMs;
  for (const ws of q.state.getWebSockets()) {
    const a = attachment(ws);
    if (!a || a.closed) continue;
    const last = Math.max(q.state.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0, a.connectedAt ?? now);
    if (now - last < staleMs) continue;
    log('agent.silent', { session: a.session, agent: a.agent, silentMs: now - last });
    disconnect(q, ws, `no heartbeat for ${now - last} ms`);
  }
}

/** When released messages may be leased again, by how often in a row their lease ended unanswered. */
function notBefore(now: number): (leaseEnds: number) => number {
  return (n) => {
    const d = releaseDelay(n);
    return d > 0 ? now + d : 0;
  };
}

/**
 * The R2 object of message `id` while it is leased (in-flight) to `session` (relay-do.ts bodyOf
 * says who asks). Null for any other message, state or session.
 */
export function leasedBody(q: QueueContext, id: string, session: string | null): { key: string; size: number } | null {
  const msg = q.store.get(id);
  if (!msg || msg.state !== 'in-flight' || msg.bodyKey === null || msg.leaseSession === null) return null;
  if (session !== null ? session !== msg.leaseSession : !presentsNoSession(q, msg.leaseSession)) return null;
  return { key: msg.bodyKey, size: msg.size - msg.prefix };
}

/** Whether `session` is an open connection whose agent's body fetches name no session (an older agent). */
function presentsNoSession(q: QueueContext, session: string): boolean {
  return q.state.getWebSockets().some((ws) => {
    const a = attachment(ws);
    return a !== null && a.session === session && a.agent !== null && a.fetchSession !== true;
  });
}

/** Whether an agent is connected that takes new work (said hello, not draining). */
export function agentOnline(q: QueueContext): boolean {
  return q.state.getWebSockets().some((ws) => {
    const a = attachment(ws);
    return a !== null && a.agent !== null && !a.draining;
  });
}

/** The connected agents, for the admin summary. */
export function connectedAgents(q: QueueContext): { agent: string; session: string }[] {
  return q.state.getWebSockets().flatMap((ws) => {
    const a = attachment(ws);
    return a && a.agent !== null && !a.closed ? [{ agent: a.agent, session: a.session }] : [];
  });
}
