// The pump (Postfix's qmgr handing work to its delivery agents): what each connection has room
// for under its window and credit: chunks of the message it is streaming, then bounce tasks,
// delay warnings and the next queued message (its agent's affinity and protocol version
// honoured by store.nextQueued), each leased to that connection.
import { FRAME } from '../protocol/wire.ts';
import { bounceHeaders } from './bounce-tasks.ts';
import { now as clock } from './clock.ts';
import { readConfig } from './env.ts';
import { log } from './log.ts';
import { retryUntil } from './retry-policy.ts';
import { attachment, retryPolicy, send, type Attachment, type QueueContext } from './queue-context.ts';
import { expire, settleAttempt } from './settle.ts';

/**
 * Chunk-path bodies (no BODIES binding, or stored before it): the credit a connection may hold
 * here, whatever its agent granted (the wire allows 64 MiB), and the chunk bytes one
 * invocation sends across every connection. ws.send has no backpressure, so what the object
 * has sent and the agent not yet read is bounded by the first, per connection; what one
 * invocation reads out of SQLite and hands to the runtime by the second (issue #15).
 */
export const HELD_CREDIT_BYTES = 8 * 1024 * 1024;
export const PUMP_BUDGET_BYTES = 4 * 1024 * 1024;

/** Pumps every open connection that said hello, but `except`, under one chunk budget. */
export function pumpAll(q: QueueContext, except?: WebSocket): void {
  q.forOthers = false;
  const budget = { bytes: PUMP_BUDGET_BYTES };
  for (const ws of q.state.getWebSockets()) {
    if (ws === except) continue;
    const a = attachment(ws);
    if (a && a.agent !== null && !a.closed) pump(q, ws, a, budget);
  }
}

/**
 * Sends what this socket has room for: chunks of the current message while
 * credit lasts (ws.send has no backpressure: credit is our flow control) and the
 * invocation's chunk budget, shared by every socket it pumps, lasts; then leases the next
 * queued message if the window allows. Chunks left for want of budget go in an alarm set
 * for now (alarm.ts scheduleAlarm), which pumps again.
 */
export function pump(q: QueueContext, ws: WebSocket, a: Attachment, budget = { bytes: PUMP_BUDGET_BYTES }): void {
  const store = q.store;
  try {
    for (;;) {
      if (a.cursor) {
        const c = a.cursor;
        while (a.credit > 0 && budget.bytes > 0 && c.seq < c.chunks) {
          const data = store.chunk(c.id, c.seq);
          ws.send(data);
          a.credit -= data.byteLength;
          budget.bytes -= data.byteLength;
          c.seq++;
        }
        if (c.seq < c.chunks) {
          // Out of budget with credit left: the alarm goes on where this stopped.
          if (a.credit > 0) q.pumpPending = true;
          break;
        }
        send(ws, { type: FRAME.END, id: c.id, chunks: c.chunks });
        a.cursor = null;
      }
      if (a.draining || store.countLeased(a.session) >= a.window) break;
      const now = clock();
      const bounce = a.bounces ? store.nextBounce(now) : null;
      if (bounce) {
        store.leaseBounce(bounce.id, a.session);
        send(ws, {
          type: FRAME.BOUNCE, id: bounce.id, sender: bounce.sender, receivedAt: bounce.receivedAt, reason: bounce.failure ?? 'refused',
          results: bounce.results.filter((r) => r.outcome !== 'delivered'),
          headers: bounceHeaders(store, bounce.id),
        });
        continue;
      }
      // A delay warning rides on the bounce frame; it leases the warning, never the message.
      const warning = a.warnings && readConfig(q.env).delayWarningMs > 0 ? q.warnings.nextWarning(now) : null;
      if (warning) {
        const m = warning.message;
        q.warnings.leaseWarning(m.id, a.session);
        send(ws, {
          type: FRAME.BOUNCE, id: m.id, sender: m.sender, receivedAt: m.receivedAt, reason: 'delayed',
          results: warning.results, retryUntil: retryUntil(m.retryFrom, retryPolicy(q)),
          headers: bounceHeaders(store, m.id),
        });
        log('warning.leased', { id: m.id, session: a.session, sender: m.sender, ageMs: now - m.receivedAt });
        continue;
      }
      // A v1 agent hashes every byte: it gets only messages whose sha256 covers them all.
      // Only an agent that said `fetch` gets messages whose body is in R2.
      const next = store.nextQueued(a.agent ?? '', now, (a.version ?? 1) >= 2, a.fetch === true);
      if (!next) break;
      // The age limit holds at every lease, not only when an attempt settles (the grace of one
      // minimal backoff lets the last attempt, which settle() schedules at the limit, run).
      const retry = retryPolicy(q);
      if (now - next.retryFrom >= retry.maxAgeMs + retry.firstRetryMs) {
        expire(q, next);
        continue;
      }
      // Never a lease that asks for nothing: with no recipient owed, the message is settled as it stands.
      if (next.recipients.length === 0) {
        settleAttempt(q, next, [], 'no recipient owed');
        continue;
      }
      store.lease(next.id, a.session, a.agent ?? '');
      // A body in R2: the agent fetches it through the Worker, no chunk passes through here.
      const body = next.bodyKey !== null
        ? { fetch: { md5: next.md5 ?? '', block: base64(store.head(next.id).subarray(0, next.prefix)) } }
        : { sha256: next.sha256 };
      send(ws, {
        type: FRAME.MESSAGE, id: next.id, attempt: next.attempts + 1, sender: next.sender,
        recipients: next.recipients, size: next.size, receivedAt: next.receivedAt, ...body,
        ...(next.auth ? { auth: next.auth } : {}),
        ...(next.prefix > 0 ? { prefix: next.prefix } : {}),
      });
      if (readConfig(q.env).logLevel === 'debug') log('message.leased', { id: next.id, session: a.session, attempt: next.attempts + 1, size: next.size });
      if (next.bodyKey === null) a.cursor = { id: next.id, seq: 0, chunks: next.chunks };
    }
  } catch (err) {
    // A send on a socket that is going away: its close handler releases the leases.
    log('pump.failed', { session: a.session, error: String(err) });
  }
  ws.serializeAttachment(a);
}

/** Base64 of a few KiB (Cloudflare's block for the message frame). */
function base64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.byteLength; i += 0x2000) s += String.fromCharCode(...bytes.subarray(i, i + 0x2000));
  return btoa(s);
}
