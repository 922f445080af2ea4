// Ingest (the Worker's email handler calls it over RPC, relay-do.ts): one message stored and
// queued, by one path whatever holds its body, its rows in SQLite (chunk-path.ts) or R2
// (bodies.ts, put by email()): unknown recipient → dedupe key → duplicate → commit → pump →
// the verdict, if one was asked for.
import { now as clock } from './clock.ts';
import { scheduleAlarm } from './alarm.ts';
import { bodyPrefix, type StoredBody } from './bodies.ts';
import { deleteBodies, learnBodiesPrefix } from './body-lifecycle.ts';
import { blockVerdicts } from './cf-auth-results.ts';
import { storeChunks } from './chunk-path.ts';
import { agentOnline } from './connections.ts';
import { readConfig } from './env.ts';
import { hex, log, randomId } from './log.ts';
import { pumpAll } from './pump.ts';
import type { QueueContext } from './queue-context.ts';
import { unknownRecipients } from './recipient-list.ts';
import type { Verdict } from './smtp-verdict.ts';

export type IngestResult =
  /** `verdict`: the agent's answer within the wait asked for; null when none was asked for. */
  | { status: 'accepted'; id: string; duplicate: boolean; verdict: Verdict | null }
  | { status: 'too-large'; size: number }
  /** The recipients list in force does not name these: refused before anything is stored. */
  | { status: 'unknown-recipient'; recipients: string[] };

/** A body stored and not yet visible to agents. */
interface Staged {
  id: string;
  /** With Cloudflare's block. */
  size: number;
  /** What the dedupe key covers: the sender's message, not Cloudflare's block (dedupeKey). */
  digest: string;
  /** A duplicate keeps nothing. */
  discard(): Promise<void>;
  /** The message queued, in one commit; what the debug line says of its body. */
  commit(key: string): { body: 'chunks' | 'r2'; chunks: number };
}

/** Where one message's body comes from: what differs between the two paths. */
export interface BodyPath {
  /** A recipient refused: nothing is kept. */
  refuse(): Promise<void>;
  stage(now: number): Promise<Staged | { status: 'too-large'; size: number }>;
  /** Set the alarm even when one is set: the chunk path; the R2 path when it started the orphan sweep's clock. */
  alarmAlways: boolean;
}

/**
 * Stores one message durably and returns only once it is committed (the runtime holds the RPC's
 * answer until the writes are on disk). With `verdictWaitMs` > 0 it then waits that long for the
 * agent's answer, in the same call, but never past `deadline` (email()'s budget, on this
 * object's clock).
 */
export async function ingest(
  q: QueueContext, sender: string, recipients: string[], path: BodyPath, verdictWaitMs: number, deadline: number,
): Promise<IngestResult> {
  const unknown = unknownRecipients(q, recipients);
  if (unknown.length > 0) {
    await path.refuse();
    log('ingest.unknown-recipient', { recipients: unknown });
    return { status: 'unknown-recipient', recipients: unknown };
  }
  const now = clock();
  const staged = await path.stage(now);
  if ('status' in staged) return staged;
  // The key covers the sender's message, not Cloudflare's block: a retry under a new block is one message.
  const key = await dedupeKey(sender, recipients, staged.digest);
  const earlier = q.store.findDuplicate(key, now - readConfig(q.env).dedupeWindowMs);
  if (earlier !== null) {
    await staged.discard();
    log('ingest.duplicate', { id: earlier, size: staged.size });
    return { status: 'accepted', id: earlier, duplicate: true, verdict: await verdictFor(q, earlier, waitLeft(verdictWaitMs, deadline)) };
  }
  const { id } = staged;
  const { body, chunks } = staged.commit(key);
  if (readConfig(q.env).logLevel === 'debug') log('ingest.queued', { id, size: staged.size, body, chunks, recipients: recipients.length });
  pumpAll(q);
  // A queued message brings no deadline of its own (nextDeadline): an alarm already set stands,
  // unless the path asks for one or the pump left chunks.
  if (path.alarmAlways || q.pumpPending || (await q.state.storage.getAlarm()) === null) await scheduleAlarm(q);
  return { status: 'accepted', id, duplicate: false, verdict: await verdictFor(q, id, waitLeft(verdictWaitMs, deadline)) };
}

/** A body that arrives as a stream: stored here in chunk rows (no BODIES bucket bound). */
export function chunkPath(
  q: QueueContext, sender: string, recipients: string[], raw: ReadableStream<Uint8Array>, maxBytes: number, sizeHint?: number,
): BodyPath {
  return {
    alarmAlways: true,
    // Read to the end before answering, as the dev route does: a client still sending its body
    // (the local ingress with a large message) would see a reset instead of the 550, treat it as
    // a temporary failure and send again, forever.
    refuse: async () => { await raw.pipeTo(new WritableStream()).catch(() => undefined); },
    stage: async (now) => {
      const id = randomId();
      q.store.begin(id, sender, recipients, now);
      let stored;
      try {
        stored = await storeChunks(q.store, id, raw, maxBytes, sizeHint);
      } catch (err) {
        q.store.remove(id);
        log('ingest.failed', { id, error: String(err) });
        throw err;
      }
      if (!stored.ok) {
        q.store.remove(id);
        log('ingest.too-large', { id, size: stored.size, maxBytes });
        return { status: 'too-large', size: stored.size };
      }
      const s = stored;
      return {
        // The dedupe key's digest as for a body in R2: a sender's retry may take the other path
        // (its new Cloudflare block can move it across INLINE_MAX_BYTES) and is still one message.
        id, size: s.size, digest: storedDigest(s.md5, s.size - s.prefix),
        discard: async () => { q.store.remove(id); },
        commit: (key) => {
          // Cloudflare's verdicts, from its block only (cf-auth-results.ts), go to the agent with the message.
          q.store.commit(id, s.size, s.sha256, s.prefix, s.chunks, key, s.auth);
          return { body: 'chunks', chunks: s.chunks };
        },
      };
    },
  };
}

/**
 * A body email() already stored in R2 (bodies.ts): the row is the only write. Its id is the one
 * in its R2 key. A duplicate (the same envelope, and R2's MD5 and length of the bytes after the
 * block) or a refused recipient keeps nothing: its R2 object is deleted.
 */
export function storedPath(q: QueueContext, sender: string, recipients: string[], body: StoredBody): BodyPath {
  const prefix = bodyPrefix(body.key);
  // Only the Worker calls this, with what putBody returned: anything else is a programmer's error.
  if (prefix === null || !Number.isSafeInteger(body.size) || !Number.isSafeInteger(body.prefix) || body.prefix < 0 || body.prefix > body.size ||
    !/^[0-9a-f]{32}$/.test(body.md5) || !(body.head instanceof Uint8Array) || body.head.byteLength < body.prefix) {
    throw new Error(`ingestStored: not a stored body: ${JSON.stringify({ key: body.key, size: body.size, prefix: body.prefix, md5: body.md5 })}`);
  }
  const sweepSet = learnBodiesPrefix(q, prefix);
  const drop = async (): Promise<void> => {
    q.store.noteBodyDelete(body.key);
    await deleteBodies(q);
  };
  return {
    alarmAlways: sweepSet,
    refuse: drop,
    stage: async (now) => {
      const id = body.key.slice(prefix.length);
      return {
        id, size: body.size, digest: storedDigest(body.md5, body.size - body.prefix), discard: drop,
        commit: (key) => {
          // Cloudflare's verdicts, from its block only (cf-auth-results.ts), as for messages in chunks.
          const auth = blockVerdicts(body.head.subarray(0, body.prefix));
          q.store.insertStored(id, sender, recipients, now, body, key, auth);
          return { body: 'r2', chunks: 0 };
        },
      };
    },
  };
}

/**
 * Waits up to `waitMs` for the agent's answer about message `id` (the email()
 * handler's synchronous verdict). Returns at once when no agent is connected;
 * null when no wait was asked for.
 */
async function verdictFor(q: QueueContext, id: string, waitMs: number): Promise<Verdict | null> {
  if (waitMs <= 0) return null;
  const known = q.verdicts.recent(id);
  if (known) return known;
  const msg = q.store.get(id);
  if (!msg) return { kind: 'unknown' };
  if (msg.state === 'deferred' || msg.state === 'dead-letter') return { kind: msg.state };
  if (!agentOnline(q)) return { kind: 'offline' };
  return q.verdicts.wait(id, waitMs);
}

/**
 * The verdict wait asked for, cut to what is left before `deadline`. A wait that was asked for
 * but has no time left is 1 ms: a verdict already known is still given, nothing is waited for.
 */
function waitLeft(asked: number, deadline: number): number {
  return asked <= 0 ? 0 : Math.max(1, Math.min(asked, deadline - Date.now()));
}

/** `digest`: of the sender's message, the bytes after Cloudflare's block (storedDigest). */
async function dedupeKey(sender: string, recipients: string[], digest: string): Promise<string> {
  const text = `${sender}\n${recipients.join('\n')}\n${digest}`;
  return hex(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));
}

/**
 * What the dedupe key takes of a body: its MD5 (R2 computes it for a body there; storeChunks for
 * one in chunk rows) and its length. docs/architecture.md, "Duplicates", says why MD5 is enough.
 */
function storedDigest(md5: string, bytes: number): string {
  return `md5:${md5}:${bytes}`;
}
