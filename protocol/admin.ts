// The admin API's answers: one definition for the Worker and queue object that write them
// (bridge-worker/admin.ts, admin-ops.ts) and for those that read them, relayctl and the agent's
// queue metrics (edge-agent/ops/queue-status.ts), with the parsers that check an answer at the edge
// field by field. Runtime-neutral: the Worker imports it.
import { STATES, type QueueMessage, type State } from './queue.ts';
import { FAILURE_REASONS, isMessageId, type Outcome, type RecipientResult } from './wire.ts';

/** An agent connected to one shard. */
export interface AgentSession { agent: string; session: string }

/** Messages and their bytes in one state: `bytes` every stored byte (R2 and chunks), `r2Bytes` those in R2. */
export interface Stored { bodies: number; bytes: number; r2Bytes: number }

/** The deployment's storage in use and the limits it is held to. */
export interface StorageUse { objectBytes: number; objectLimitBytes: number; r2Bytes: number; r2LimitBytes: number; warnPercent: number }

/** One shard's part of GET /admin/queue (the queue object's adminSummary); the Worker sums the shards. */
export interface ShardSummary {
  states: Record<State, number>;
  agents: AgentSession[];
  /** receivedAt of the oldest message still owed (not bounced or dead-lettered); null: none. */
  oldest: number | null;
  /** receivedAt of the oldest message in each state (incoming: always null). */
  oldestByState: Record<State, number | null>;
  /** Bounces (DSNs) sent since the object was created. */
  bouncesSent: number;
  stored: Record<State, Stored>;
  /** This object's SQLite database. */
  objectBytes: number;
}

/** GET /admin/queue: every shard summed. Also the only answer STATUS_TOKEN may read (numbers, never an address). */
export interface QueueSummary {
  states: Record<State, number>;
  agents: (AgentSession & { shard: number })[];
  oldest: number | null;
  oldestByState: Record<State, number | null>;
  bouncesSent: number;
  stored: Record<State, Stored>;
  storage: StorageUse;
  shards: number;
}

/**
 * A summary as a client reads it: a field that a Worker older than it leaves out is null
 * (shown as unknown, not taken for an error); one that is there must have its shape.
 */
export interface QueueSummaryRead {
  states: Record<State, number>;
  agents: AgentSession[];
  oldest: number | null;
  oldestByState: Record<State, number | null> | null;
  bouncesSent: number | null;
  stored: Record<State, Stored> | null;
  storage: StorageUse | null;
  shards: number | null;
}

/** One header field of a message's header section, as GET /admin/messages/<id> shows it (raw, undecoded). */
export interface HeaderField { name: string; value: string }

/** GET /admin/messages/<id>. */
export interface MessageDetail extends QueueMessage { headers: HeaderField[] }

/** POST /admin/messages/<id>/replay: the message is queued again under a new id. */
export interface ReplayAnswer { id: string; replayedFrom: string; state: 'queued' }

/** What an action about one message answers (retry, hold, release: its new state; delete; purge). */
export type ActionAnswer = { id: string; state: State } | { id: string; deleted: true } | { id: string; purged: true };

/** POST /admin/flush. */
export interface FlushAnswer { flushed: number }

// ---- parsers ------------------------------------------------------------------------

/** An answer that is not the admin API's: the message names the field, `body.states.queued: not a whole number`. */
export class AdminShapeError extends Error {
  override name = 'AdminShapeError';
}

type Obj = Record<string, unknown>;
const OUTCOMES: readonly Outcome[] = ['delivered', 'tempfail', 'permfail'];

function obj(v: unknown, at: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new AdminShapeError(`${at}: not an object`);
  return v as Obj;
}
function arr(v: unknown, at: string): unknown[] {
  if (!Array.isArray(v)) throw new AdminShapeError(`${at}: not an array`);
  return v;
}
function str(v: unknown, at: string): string {
  if (typeof v !== 'string') throw new AdminShapeError(`${at}: not a string`);
  return v;
}
function int(v: unknown, at: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new AdminShapeError(`${at}: not a whole number`);
  return v;
}
function strOrNull(v: unknown, at: string): string | null {
  return v === null ? null : str(v, at);
}
function intOrNull(v: unknown, at: string): number | null {
  return v === null ? null : int(v, at);
}
function oneOf<T extends string>(v: unknown, list: readonly T[], at: string): T {
  if (typeof v !== 'string' || !(list as readonly string[]).includes(v)) throw new AdminShapeError(`${at}: not one of ${list.join(', ')}`);
  return v as T;
}
function messageId(v: unknown, at: string): string {
  if (!isMessageId(v)) throw new AdminShapeError(`${at}: not a message id`);
  return v;
}
/** One value per state, each read by `read`. */
function byState<T>(v: unknown, at: string, read: (x: unknown, at: string) => T): Record<State, T> {
  const o = obj(v, at);
  return Object.fromEntries(STATES.map((k) => [k, read(o[k], `${at}.${k}`)])) as Record<State, T>;
}

/** GET /admin/queue. Throws AdminShapeError. */
export function parseQueueSummary(v: unknown): QueueSummaryRead {
  const o = obj(v, 'body');
  const states = byState(o.states, 'body.states', int);
  const agents = arr(o.agents, 'body.agents').map((a, i) => {
    const x = obj(a, `body.agents[${i}]`);
    return { agent: str(x.agent, `body.agents[${i}].agent`), session: str(x.session, `body.agents[${i}].session`) };
  });
  // A Worker older than these answers without them.
  const stored = o.stored === undefined ? null : byState(o.stored, 'body.stored', (s, at): Stored => {
    const x = obj(s, at);
    return { bodies: int(x.bodies, `${at}.bodies`), bytes: int(x.bytes, `${at}.bytes`), r2Bytes: int(x.r2Bytes, `${at}.r2Bytes`) };
  });
  const u = o.storage === undefined ? null : obj(o.storage, 'body.storage');
  const storage = u === null ? null : {
    objectBytes: int(u.objectBytes, 'body.storage.objectBytes'), objectLimitBytes: int(u.objectLimitBytes, 'body.storage.objectLimitBytes'),
    r2Bytes: int(u.r2Bytes, 'body.storage.r2Bytes'), r2LimitBytes: int(u.r2LimitBytes, 'body.storage.r2LimitBytes'),
    warnPercent: int(u.warnPercent, 'body.storage.warnPercent'),
  };
  return {
    states, agents, oldest: intOrNull(o.oldest, 'body.oldest'),
    oldestByState: o.oldestByState === undefined ? null : byState(o.oldestByState, 'body.oldestByState', (x, at) => (x === undefined ? null : intOrNull(x, at))),
    bouncesSent: o.bouncesSent === undefined ? null : int(o.bouncesSent, 'body.bouncesSent'),
    stored, storage, shards: o.shards === undefined ? null : int(o.shards, 'body.shards'),
  };
}

function recipientResult(v: unknown, at: string): RecipientResult {
  const o = obj(v, at);
  return {
    recipient: str(o.recipient, `${at}.recipient`),
    code: int(o.code, `${at}.code`),
    enhanced: strOrNull(o.enhanced, `${at}.enhanced`),
    text: str(o.text, `${at}.text`),
    outcome: oneOf(o.outcome, OUTCOMES, `${at}.outcome`),
  };
}

/** One message of a list or of GET /admin/messages/<id>; `at` names it in errors. */
export function parseQueueMessage(v: unknown, at: string): QueueMessage {
  const o = obj(v, at);
  return {
    id: messageId(o.id, `${at}.id`),
    state: oneOf(o.state, STATES, `${at}.state`),
    sender: str(o.sender, `${at}.sender`),
    recipients: arr(o.recipients, `${at}.recipients`).map((r, i) => str(r, `${at}.recipients[${i}]`)),
    results: arr(o.results, `${at}.results`).map((r, i) => recipientResult(r, `${at}.results[${i}]`)),
    size: int(o.size, `${at}.size`),
    sha256: str(o.sha256, `${at}.sha256`),
    // Absent from a Worker older than the Cloudflare block's recognition: no prefix.
    prefix: o.prefix === undefined ? 0 : int(o.prefix, `${at}.prefix`),
    chunks: int(o.chunks, `${at}.chunks`),
    // Absent from a Worker older than bodies in R2: the bytes are in chunks.
    bodyKey: o.bodyKey === undefined ? null : strOrNull(o.bodyKey, `${at}.bodyKey`),
    md5: o.md5 === undefined ? null : strOrNull(o.md5, `${at}.md5`),
    receivedAt: int(o.receivedAt, `${at}.receivedAt`),
    retryFrom: int(o.retryFrom, `${at}.retryFrom`),
    attempts: int(o.attempts, `${at}.attempts`),
    nextAttemptAt: intOrNull(o.nextAttemptAt, `${at}.nextAttemptAt`),
    leaseSession: strOrNull(o.leaseSession, `${at}.leaseSession`),
    lastError: strOrNull(o.lastError, `${at}.lastError`),
    // Absent from a Worker older than the bounce states: read as null.
    failure: o.failure === undefined || o.failure === null ? null : oneOf(o.failure, FAILURE_REASONS, `${at}.failure`),
    bounceStatus: o.bounceStatus === undefined ? null : strOrNull(o.bounceStatus, `${at}.bounceStatus`),
    settledAt: o.settledAt === undefined ? null : intOrNull(o.settledAt, `${at}.settledAt`),
  };
}

/** GET /admin/messages and /admin/dead-letter: `{ messages }`. */
export function parseMessageList(v: unknown): QueueMessage[] {
  return arr(obj(v, 'body').messages, 'body.messages').map((m, i) => parseQueueMessage(m, `body.messages[${i}]`));
}

/** GET /admin/messages/<id>. */
export function parseMessageDetail(v: unknown): MessageDetail {
  const o = obj(v, 'body');
  const headers = arr(o.headers, 'body.headers').map((h, i) => {
    const x = obj(h, `body.headers[${i}]`);
    return { name: str(x.name, `body.headers[${i}].name`), value: str(x.value, `body.headers[${i}].value`) };
  });
  return { ...parseQueueMessage(o, 'body'), headers };
}

/** The answer to an action about message `id`: `key` (state, deleted or purged) must be `want`. */
export function checkActionAnswer(v: unknown, id: string, key: 'state' | 'purged' | 'deleted', want: State | true): void {
  const o = obj(v, 'body');
  if (o.id !== id || o[key] !== want) throw new AdminShapeError(`body: expected {"id":"${id}","${key}":${JSON.stringify(want)}}`);
}

/** The replay of message `id`: the id it is queued under (a Worker older than issue #22 keeps `id` and has no `replayedFrom`). */
export function parseReplayAnswer(v: unknown, id: string): string {
  const o = obj(v, 'body');
  const from = o.replayedFrom ?? o.id;
  if (from !== id || o.state !== 'queued' || typeof o.id !== 'string' || !isMessageId(o.id)) {
    throw new AdminShapeError(`body: expected {"id":"<new id>","replayedFrom":"${id}","state":"queued"}`);
  }
  return o.id;
}

/** POST /admin/flush: how many deferred messages were made due. */
export function parseFlushAnswer(v: unknown): number {
  return int(obj(v, 'body').flushed, 'body.flushed');
}
