// The agent <-> object wire protocol, version 2 (docs/protocol.md).
// Imported by bridge-worker (workerd) and edge-agent (Node): keep it free of
// runtime-specific APIs. Every frame from the other end goes through a parser
// here that checks each field and returns null instead of throwing.
//
// Control frames are JSON text frames. Message bytes travel as binary frames,
// each one a chunk of the message whose `message` frame came last; messages are
// never interleaved on one socket, so a binary frame needs no header.

export const PROTOCOL_VERSION = 2;
/**
 * Versions the object accepts in hello: a v1 agent neither publishes recipients nor sends
 * bounces, and hashes every byte, so it gets only messages with `prefix` 0.
 */
export const SUPPORTED_VERSIONS: readonly number[] = [1, 2];

/** Largest control frame either end accepts (bytes of UTF-16 text, roughly). */
export const MAX_CONTROL_FRAME = 64 * 1024;
/** Longest `text` of an ack's result, a nack or a bounced frame, in UTF-16 code units. */
export const MAX_RESULT_TEXT = 1000;
/** Largest binary chunk frame: one stored chunk row (a SQLite row holds at most 2 MB). */
export const MAX_CHUNK_BYTES = 1024 * 1024;
/** Largest byte credit an agent may hold out at once. */
export const MAX_CREDIT_BYTES = 64 * 1024 * 1024;
/** Largest number of unacknowledged messages per connection. */
export const MAX_WINDOW = 64;
/** Parts of one published recipients list (each a control frame): about 10 MB of addresses. */
export const MAX_RECIPIENT_PARTS = 200;
/** Longest entry of a recipients list: an address or '@domain'. */
export const MAX_RECIPIENT_ENTRY = 320;
/** Header bytes of a failed message that travel with its bounce task (RFC 3462 allows a cut). */
export const MAX_BOUNCE_HEADER_BYTES = 32 * 1024;
/** Text the agent sends as heartbeat; the object answers PONG without waking. */
export const PING = 'ping';
export const PONG = 'pong';

export const FRAME = {
  // agent -> object: first frame on a new socket; version, name, window, initial credit
  HELLO: 'hello',
  // agent -> object: grants more bytes of chunk data
  CREDIT: 'credit',
  // agent -> object: final per-recipient results for one message
  ACK: 'ack',
  // agent -> object: hands a message back undelivered (shutdown, corrupt transfer)
  NACK: 'nack',
  // agent -> object (v2): one part of the list of deliverable recipients; others get 550 5.1.1
  RECIPIENTS: 'recipients',
  // agent -> object (v2): the delivery target answers again: try deferred messages now
  RETRY: 'retry',
  // agent -> object (v2): what became of a bounce task
  BOUNCED: 'bounced',
  // object -> agent: answer to hello
  WELCOME: 'welcome',
  // object -> agent: header of the message whose binary chunks follow
  MESSAGE: 'message',
  // object -> agent: all chunks of the current message were sent
  END: 'end',
  // object -> agent (v2): send a delivery status notification (RFC 3464) for a failed message,
  // or (reason `delayed`, to agents whose hello said `warnings`) a delay warning for a deferred one
  BOUNCE: 'bounce',
} as const;

export type Outcome = 'delivered' | 'tempfail' | 'permfail';
const OUTCOMES: readonly string[] = ['delivered', 'tempfail', 'permfail'];

/** One recipient's final result, as the LMTP server (or the agent, for local errors) gave it. */
export interface RecipientResult {
  recipient: string;
  /** SMTP reply code, or 0 for a local error with no reply (timeout, connection lost). */
  code: number;
  enhanced: string | null;
  text: string;
  outcome: Outcome;
}

/** RFC 8601 result keywords (§2.7): the only values a verdict may take on the wire. */
export const AUTH_RESULTS = ['pass', 'fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror', 'policy'] as const;
export type AuthResult = (typeof AUTH_RESULTS)[number];
/**
 * Cloudflare's verdicts on a message, as Email Routing reported them (bridge-worker/cf-auth-results.ts).
 * A verdict Cloudflare did not report is 'none': never a guess.
 */
export interface AuthVerdicts { spf: AuthResult; dkim: AuthResult; dmarc: AuthResult; arc: AuthResult }
export const AUTH_METHODS = ['spf', 'dkim', 'dmarc', 'arc'] as const;
export const NO_VERDICTS: AuthVerdicts = { spf: 'none', dkim: 'none', dmarc: 'none', arc: 'none' };

export function isAuthResult(v: unknown): v is AuthResult {
  return typeof v === 'string' && (AUTH_RESULTS as readonly string[]).includes(v);
}

/** Exactly the four methods, each an RFC 8601 keyword. */
export function isAuthVerdicts(v: unknown): v is AuthVerdicts {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const o = v as Record<string, unknown>;
  return Object.keys(o).length === AUTH_METHODS.length && AUTH_METHODS.every((m) => isAuthResult(o[m]));
}

export type NackReason = 'shutdown' | 'corrupt' | 'unavailable';
const NACK_REASONS: readonly string[] = ['shutdown', 'corrupt', 'unavailable'];

export interface HelloFrame {
  type: 'hello'; v: number; agent: string; window: number; credit: number;
  /** v2: this agent has a bounce relay and takes bounce tasks. */
  bounces?: boolean;
  /** v2: with `bounces`, this agent also takes delay warnings (`bounce` tasks with reason `delayed`). */
  warnings?: boolean;
  /** v2: this agent fetches bodies stored in R2 over HTTP (`fetch` in the message frame). */
  fetch?: boolean;
  /**
   * v2: its body fetches present its session (the welcome's) in BODY_SESSION_HEADER: a body
   * leased to it is then served to no fetch without it. Absent: an older agent, served as before.
   */
  fetchSession?: boolean;
}

/** The request header of GET /agent/body/<id> that names the session holding the message's lease. */
export const BODY_SESSION_HEADER = 'Mailbridge-Session';
export interface CreditFrame { type: 'credit'; bytes: number }
export interface AckFrame { type: 'ack'; id: string; results: RecipientResult[] }
export interface NackFrame { type: 'nack'; id: string; reason: NackReason; text: string }
/**
 * One part of the recipients list. `digest` (SHA-256 hex of the whole list, entries joined
 * with '\n') names the list its parts belong to; a list becomes active once all its parts
 * arrived. No entries at all = no list: every recipient is accepted, as without one.
 */
export interface RecipientsFrame {
  type: 'recipients'; digest: string; part: number; parts: number;
  /** recipient_delimiter of the home server ('' = none): 'a+x@d' is known when 'a@d' is. */
  delimiter: string;
  /** Lowercase 'local@domain' or '@domain' (every address of the domain). */
  entries: string[];
}
export interface RetryFrame { type: 'retry' }
export type BounceStatus = 'sent' | 'deferred' | 'failed' | 'delivered';
const BOUNCE_STATUSES: readonly string[] = ['sent', 'deferred', 'failed', 'delivered'];
/**
 * sent: the bounce relay took the DSN (or the journal says it did earlier); deferred: try
 * again later (relay down, 4xx); failed: the relay refused it for good (the message goes to
 * dead-letter). `code`/`text`: the relay's reply, 0 for a local error.
 *
 * A task the object gave up without a refusal (`attempts`, `expired`) may be for a message the
 * agent did deliver, its ack lost: `results` are then the delivered recipients of the task, as
 * the agent's journal (or Dovecot) knows them, left out of the DSN. `delivered`: every
 * recipient of the task was, no DSN went out (`results` names each one). An object that does
 * not know `delivered` refuses the frame for that message alone and defers its bounce.
 */
export interface BouncedFrame {
  type: 'bounced'; id: string; status: BounceStatus; code: number; text: string;
  results?: RecipientResult[];
}
export type AgentFrame = HelloFrame | CreditFrame | AckFrame | NackFrame | RecipientsFrame | RetryFrame | BouncedFrame;

export interface WelcomeFrame { type: 'welcome'; v: number; session: string; window: number; maxChunk: number }
export interface MessageFrame {
  type: 'message';
  id: string;
  attempt: number;
  /** Envelope sender; '' is the null reverse-path <>. */
  sender: string;
  recipients: string[];
  size: number;
  /**
   * Lowercase hex SHA-256 of the stored bytes after the first `prefix`, for a message whose
   * chunks follow as binary frames. Absent exactly when `fetch` is present.
   */
  sha256?: string;
  /**
   * The body is not sent as chunks: the agent fetches it (GET /agent/body/<id>, its bearer
   * token) and delivers `block` (base64 of Cloudflare's block, `prefix` bytes) followed by it.
   * `md5`: lowercase hex MD5 of the fetched bytes (R2's own checksum), checked end to end.
   */
  fetch?: FetchedBody;
  /**
   * v2: length of Cloudflare's block at the start of the bytes, which `sha256` does not cover
   * (`size` does); absent means 0.
   */
  prefix?: number;
  /** When the Worker accepted it, ms since the epoch. */
  receivedAt: number;
  /** Cloudflare's SPF/DKIM/DMARC/ARC verdicts; absent for messages stored before they were kept (= all 'none'). */
  auth?: AuthVerdicts;
}
export interface FetchedBody { md5: string; block: string }
export interface EndFrame { type: 'end'; id: string; chunks: number }
/** Why a message failed for good: refused by the target, too old, or too many attempts that never settled. */
export type FailureReason = 'refused' | 'expired' | 'attempts';
export const FAILURE_REASONS: readonly FailureReason[] = ['refused', 'expired', 'attempts'];
/** What a DSN reports: a failure (a bounce), or `delayed`: still deferred, a warning only (Postfix delay_warning_time). */
export type DsnReason = FailureReason | 'delayed';
const DSN_REASONS: readonly string[] = ['refused', 'expired', 'attempts', 'delayed'];
/**
 * A bounce task, sent to agents whose hello said `bounces`: one DSN to `sender` (never '')
 * reporting `results` (the recipients that failed, each with the reply that failed it).
 * Counts against the window like a message; answered with `bounced`. With reason `delayed`
 * (only to agents whose hello also said `warnings`) it is a delay warning: `results` are the
 * recipients still pending with their last temporary failure, and `retryUntil` is set.
 */
export interface BounceFrame {
  type: 'bounce'; id: string; sender: string; receivedAt: number; reason: DsnReason;
  results: RecipientResult[];
  /** Base64 of the message's header section, at most MAX_BOUNCE_HEADER_BYTES, cut at a line end. */
  headers: string;
  /** Reason `delayed` only (and then always): ms since the epoch until which the message is retried. */
  retryUntil?: number;
}
export type ObjectFrame = WelcomeFrame | MessageFrame | EndFrame | BounceFrame;

// ---- field checks -----------------------------------------------------------

type Obj = Record<string, unknown>;

const ID_RE = /^[0-9a-f]{32}$/;
const SHA_RE = /^[0-9a-f]{64}$/;
const MD5_RE = /^[0-9a-f]{32}$/;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;
/** Cloudflare's block is at most 8 KiB (bridge-worker/cloudflare-block.ts): its base64 at most this. */
const MAX_BLOCK_BASE64 = Math.ceil(8 * 1024 / 3) * 4;
const AGENT_RE = /^[A-Za-z0-9._-]{1,64}$/;
const ENHANCED_RE = /^[245]\.\d{1,3}\.\d{1,3}$/;

export function isMessageId(v: unknown): v is string {
  return typeof v === 'string' && ID_RE.test(v);
}

function isInt(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
}

function isText(v: unknown, max: number): v is string {
  return typeof v === 'string' && v.length <= max;
}

/**
 * An envelope address as it may travel on the wire and later into an LMTP
 * command: printable, no angle brackets, no CR/LF/NUL. '' only for the sender.
 */
export function isAddress(v: unknown, allowEmpty = false): v is string {
  if (typeof v !== 'string') return false;
  if (v === '') return allowEmpty;
  // eslint-disable-next-line no-control-regex
  return v.length <= 512 && !/[\x00-\x20<>\x7f]/.test(v);
}

function isResult(v: unknown): v is RecipientResult {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Obj;
  return isAddress(r.recipient) &&
    (r.code === 0 || isInt(r.code, 200, 599)) &&
    (r.enhanced === null || (typeof r.enhanced === 'string' && ENHANCED_RE.test(r.enhanced))) &&
    isText(r.text, MAX_RESULT_TEXT) &&
    typeof r.outcome === 'string' && OUTCOMES.includes(r.outcome);
}

function parseJson(raw: string): Obj | null {
  if (raw.length > MAX_CONTROL_FRAME) return null;
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    return null;
  }
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : null;
}

// ---- results as they may go on the wire ---------------------------------------

/** Ends a result text the agent shortened; plain ASCII, so JSON adds nothing to it. */
export const CUT_MARK = ' [cut]';

/** Characters JSON.stringify writes for one UTF-16 code unit of a string. */
function escapedLength(unit: number, lone: boolean): number {
  if (unit === 0x22 || unit === 0x5c) return 2;                 // \" \\
  if (unit === 0x08 || unit === 0x09 || unit === 0x0a || unit === 0x0c || unit === 0x0d) return 2;
  if (unit < 0x20 || lone) return 6;                            // \u00XX, a lone surrogate \uDXXX
  return 1;
}

/** What `text` costs inside a JSON string: its length once escaped, quotes not counted. */
function encodedLength(text: string): number {
  return JSON.stringify(text).length - 2;
}

/**
 * `text` itself when it is at most `units` long and costs at most `budget` once escaped; else its
 * longest prefix that, with CUT_MARK after it, stays within both. '' when not even the mark fits.
 */
function cutText(text: string, units: number, budget: number): string {
  if (text.length <= units && encodedLength(text) <= budget) return text;
  const maxUnits = units - CUT_MARK.length;
  const maxCost = budget - CUT_MARK.length;
  if (maxUnits < 0 || maxCost < 0) return '';
  let end = 0;
  let cost = 0;
  while (end < text.length) {
    const u = text.charCodeAt(end);
    const next = text.charCodeAt(end + 1);
    const surrogate = u >= 0xd800 && u <= 0xdfff;
    const pair = u <= 0xdbff && surrogate && next >= 0xdc00 && next <= 0xdfff;
    // A surrogate pair is kept whole or not at all: half of one would be a broken character.
    const n = pair ? 2 : 1;
    const c = pair ? 2 : escapedLength(u, surrogate);
    if (end + n > maxUnits || cost + c > maxCost) break;
    end += n;
    cost += c;
  }
  return text.slice(0, end) + CUT_MARK;
}

/** A placeholder message id: every id is 32 characters, so it costs what the real one will. */
const SOME_ID = '0'.repeat(32);

/**
 * The results as an ack may carry them, so that the object never refuses the ack (1008) and
 * the message never loops: a code outside 0 / 200-599 becomes 0 and an enhanced code that is
 * not x.y.z becomes null (the outcome is kept either way); each text is cut to MAX_RESULT_TEXT
 * and, when the whole ack would exceed MAX_CONTROL_FRAME (100 recipients, long multi-line
 * replies, characters JSON escapes), the longest texts are cut further until it fits. A cut
 * text ends with CUT_MARK. `reserve`: characters the frame carrying them has beyond an ack's
 * (a `bounced` frame's status, code and text). Recipients are never changed (the ack must name each one): only
 * when they alone fill the frame can the ack still be too large.
 */
export function wireResults(results: readonly RecipientResult[], reserve = 0): RecipientResult[] {
  const fixed = results.map((r): RecipientResult => ({
    recipient: r.recipient,
    code: r.code === 0 || isInt(r.code, 200, 599) ? r.code : 0,
    enhanced: typeof r.enhanced === 'string' && ENHANCED_RE.test(r.enhanced) ? r.enhanced : null,
    text: cutText(r.text, MAX_RESULT_TEXT, Number.POSITIVE_INFINITY),
    outcome: r.outcome,
  }));
  const frame = (rs: RecipientResult[]): number => encodeFrame({ type: 'ack', id: SOME_ID, results: rs }).length + reserve;
  if (frame(fixed) <= MAX_CONTROL_FRAME) return fixed;
  // What the texts may cost together, shared max-min fair: a text shorter than an equal share
  // keeps all of it, and what it leaves goes to the longer ones.
  let left = MAX_CONTROL_FRAME - frame(fixed.map((r) => ({ ...r, text: '' })));
  const order = fixed.map((r, i) => ({ i, cost: encodedLength(r.text) })).sort((x, y) => x.cost - y.cost);
  const out = [...fixed];
  for (const [k, { i, cost }] of order.entries()) {
    const share = Math.max(0, Math.floor(left / (order.length - k)));
    const r = fixed[i] as RecipientResult;
    const text = cost <= share ? r.text : cutText(r.text, MAX_RESULT_TEXT, share);
    out[i] = { ...r, text };
    left -= encodedLength(text);
  }
  return out;
}

// ---- parsers ----------------------------------------------------------------

/** Parses a text frame sent by the agent; null when it is not a valid v1 frame. */
export function parseAgentFrame(raw: string): AgentFrame | null {
  const f = parseJson(raw);
  if (!f) return null;
  switch (f.type) {
    case FRAME.HELLO:
      return isInt(f.v, 1, 1000) && typeof f.agent === 'string' && AGENT_RE.test(f.agent) &&
        isInt(f.window, 1, MAX_WINDOW) && isInt(f.credit, 0, MAX_CREDIT_BYTES) &&
        (f.bounces === undefined || typeof f.bounces === 'boolean') && (f.warnings === undefined || typeof f.warnings === 'boolean') &&
        (f.fetch === undefined || typeof f.fetch === 'boolean') && (f.fetchSession === undefined || typeof f.fetchSession === 'boolean')
        ? {
          type: 'hello', v: f.v, agent: f.agent, window: f.window, credit: f.credit,
          ...(f.bounces === true ? { bounces: true } : {}), ...(f.warnings === true ? { warnings: true } : {}),
          ...(f.fetch === true ? { fetch: true } : {}), ...(f.fetchSession === true ? { fetchSession: true } : {}),
        }
        : null;
    case FRAME.CREDIT:
      return isInt(f.bytes, 1, MAX_CREDIT_BYTES) ? { type: 'credit', bytes: f.bytes } : null;
    case FRAME.ACK:
      return isMessageId(f.id) && Array.isArray(f.results) && f.results.length > 0 &&
        f.results.length <= 100 && f.results.every(isResult)
        ? { type: 'ack', id: f.id, results: f.results as RecipientResult[] }
        : null;
    case FRAME.NACK:
      return isMessageId(f.id) && typeof f.reason === 'string' && NACK_REASONS.includes(f.reason) &&
        isText(f.text, MAX_RESULT_TEXT)
        ? { type: 'nack', id: f.id, reason: f.reason as NackReason, text: f.text }
        : null;
    case FRAME.RECIPIENTS:
      return typeof f.digest === 'string' && SHA_RE.test(f.digest) && isInt(f.parts, 1, MAX_RECIPIENT_PARTS) &&
        isInt(f.part, 0, f.parts - 1) && typeof f.delimiter === 'string' && /^[+\-_.=]?$/.test(f.delimiter) &&
        Array.isArray(f.entries) && f.entries.every(isRecipientEntry)
        ? { type: 'recipients', digest: f.digest, part: f.part, parts: f.parts, delimiter: f.delimiter, entries: f.entries as string[] }
        : null;
    case FRAME.RETRY:
      return { type: 'retry' };
    case FRAME.BOUNCED:
      return isMessageId(f.id) && typeof f.status === 'string' && BOUNCE_STATUSES.includes(f.status) &&
        (f.code === 0 || isInt(f.code, 200, 599)) && isText(f.text, MAX_RESULT_TEXT) && isDeliveredResults(f.results, f.status === 'delivered')
        ? {
          type: 'bounced', id: f.id, status: f.status as BounceStatus, code: f.code, text: f.text,
          ...(Array.isArray(f.results) ? { results: f.results as RecipientResult[] } : {}),
        }
        : null;
    default:
      return null;
  }
}

/** A `bounced` frame's `results`: absent (required with `delivered`), or 1-100 delivered results. */
function isDeliveredResults(v: unknown, required: boolean): boolean {
  if (v === undefined) return !required;
  return Array.isArray(v) && v.length > 0 && v.length <= 100 && v.every((r) => isResult(r) && r.outcome === 'delivered');
}

/** A recipients-list entry: lowercase 'local@domain' or '@domain'. */
export function isRecipientEntry(v: unknown): v is string {
  return typeof v === 'string' && v.length <= MAX_RECIPIENT_ENTRY && /^[^\x00-\x20<>@\x7f]*@[a-z0-9.-]+$/.test(v) && v === v.toLowerCase();
}

/**
 * The id of the message a frame that failed to parse is about, when it says one: an ack or
 * bounced the object cannot accept then affects that message only, not the connection.
 */
export function frameMessageId(raw: string): string | null {
  if (raw.length > MAX_CONTROL_FRAME) {
    // Too long to parse (that is what broke it): encodeFrame writes type and id first.
    const m = /^\{"type":"(?:ack|nack|bounced)","id":"([0-9a-f]{32})"/.exec(raw.slice(0, 128));
    return m?.[1] ?? null;
  }
  const f = parseJson(raw);
  return f && (f.type === FRAME.ACK || f.type === FRAME.NACK || f.type === FRAME.BOUNCED) && isMessageId(f.id) ? f.id : null;
}

/** Named field checks of a frame: the parser needs them all; the first that fails says why. */
type Checks = readonly (readonly [string, (f: Obj) => boolean])[];

function firstProblem(checks: Checks, f: Obj): string | null {
  return checks.find(([, ok]) => !ok(f))?.[0] ?? null;
}

const MESSAGE_CHECKS: Checks = [
  ['bad id', (f) => isMessageId(f.id)],
  ['bad attempt', (f) => isInt(f.attempt, 1, 1_000_000)],
  ['bad sender', (f) => isAddress(f.sender, true)],
  ['no recipients', (f) => Array.isArray(f.recipients) && f.recipients.length > 0],
  ['more than 100 recipients', (f) => (f.recipients as unknown[]).length <= 100],
  ['bad recipient address', (f) => (f.recipients as unknown[]).every((r) => isAddress(r))],
  ['bad size', (f) => isInt(f.size, 0, 2 ** 40)],
  // Exactly one of the two ways the bytes come: chunks checked by sha256, or fetched.
  ['bad sha256 or fetch', (f) => (f.fetch === undefined
    ? typeof f.sha256 === 'string' && SHA_RE.test(f.sha256)
    : f.sha256 === undefined && isFetchedBody(f.fetch, typeof f.prefix === 'number' ? f.prefix : 0))],
  ['bad receivedAt', (f) => isInt(f.receivedAt, 0, 2 ** 53)],
  ['bad auth verdicts', (f) => f.auth === undefined || isAuthVerdicts(f.auth)],
  ['bad prefix', (f) => f.prefix === undefined || isInt(f.prefix, 0, f.size as number)],
];

const BOUNCE_CHECKS: Checks = [
  ['bad id', (f) => isMessageId(f.id)],
  ['bad sender', (f) => isAddress(f.sender)],
  ['bad receivedAt', (f) => isInt(f.receivedAt, 0, 2 ** 53)],
  ['bad reason', (f) => typeof f.reason === 'string' && DSN_REASONS.includes(f.reason)],
  ['bad retryUntil', (f) => (f.reason === 'delayed' ? isInt(f.retryUntil, 0, 2 ** 53) : f.retryUntil === undefined)],
  ['no results', (f) => Array.isArray(f.results) && f.results.length > 0],
  ['more than 100 results', (f) => (f.results as unknown[]).length <= 100],
  ['bad result', (f) => (f.results as unknown[]).every(isResult)],
  ['bad headers', (f) => typeof f.headers === 'string' && f.headers.length <= Math.ceil(MAX_BOUNCE_HEADER_BYTES / 3) * 4 && BASE64_RE.test(f.headers)],
];

/** A frame from the object about one message that the agent cannot take, and why. */
export interface RefusedFrame {
  type: 'message' | 'bounce' | 'end'; id: string; why: string;
  /** Of a message frame, what of its envelope passed the checks, for the agent's log; the rest is 0 or ''. */
  envelope: { attempt: number; sender: string; recipients: string[]; size: number; receivedAt: number };
}

/**
 * For a text frame parseObjectFrame refused: the message it is about and why, when it names
 * one (a message, bounce or end frame with a valid id). The agent then answers for that
 * message alone and keeps the connection, as the object does with frameMessageId. Null when no
 * message id can be recovered: only then is the connection itself at fault.
 */
export function refusedObjectFrame(raw: string): RefusedFrame | null {
  if (raw.length > MAX_CONTROL_FRAME) {
    // Too long to parse (that is what broke it): encodeFrame writes type and id first.
    const m = /^\{"type":"(message|bounce|end)","id":"([0-9a-f]{32})"/.exec(raw.slice(0, 128));
    if (!m?.[1] || !m[2]) return null;
    const why = `a frame of ${raw.length} characters, over the limit of ${MAX_CONTROL_FRAME}`;
    return { type: m[1] as RefusedFrame['type'], id: m[2], why, envelope: envelopeOf({}) };
  }
  const f = parseJson(raw);
  if (!f || !isMessageId(f.id)) return null;
  const envelope = envelopeOf(f);
  switch (f.type) {
    case FRAME.MESSAGE:
      return { type: 'message', id: f.id, why: firstProblem(MESSAGE_CHECKS, f) ?? 'unreadable', envelope };
    case FRAME.BOUNCE:
      return { type: 'bounce', id: f.id, why: firstProblem(BOUNCE_CHECKS, f) ?? 'unreadable', envelope };
    case FRAME.END:
      return { type: 'end', id: f.id, why: 'bad chunk count', envelope };
    default:
      return null;
  }
}

function envelopeOf(f: Obj): RefusedFrame['envelope'] {
  return {
    attempt: isInt(f.attempt, 1, 1_000_000) ? f.attempt : 0,
    sender: isAddress(f.sender, true) ? f.sender : '',
    recipients: Array.isArray(f.recipients) ? f.recipients.filter((r): r is string => isAddress(r)).slice(0, 100) : [],
    size: isInt(f.size, 0, 2 ** 40) ? f.size : 0,
    receivedAt: isInt(f.receivedAt, 0, 2 ** 53) ? f.receivedAt : 0,
  };
}

/** Parses a text frame sent by the object; null when it is not a valid v1 frame. */
export function parseObjectFrame(raw: string): ObjectFrame | null {
  const f = parseJson(raw);
  if (!f) return null;
  switch (f.type) {
    case FRAME.WELCOME:
      return isInt(f.v, 1, 1000) && typeof f.session === 'string' && ID_RE.test(f.session) &&
        isInt(f.window, 1, MAX_WINDOW) && isInt(f.maxChunk, 1, MAX_CHUNK_BYTES)
        ? { type: 'welcome', v: f.v, session: f.session, window: f.window, maxChunk: f.maxChunk }
        : null;
    case FRAME.MESSAGE:
      return firstProblem(MESSAGE_CHECKS, f) === null
        ? {
          type: 'message', id: f.id as string, attempt: f.attempt as number, sender: f.sender as string,
          recipients: f.recipients as string[], size: f.size as number, receivedAt: f.receivedAt as number,
          ...(typeof f.sha256 === 'string' ? { sha256: f.sha256 } : {}),
          ...(f.fetch !== undefined ? { fetch: { md5: (f.fetch as FetchedBody).md5, block: (f.fetch as FetchedBody).block } } : {}),
          ...(f.auth !== undefined ? { auth: { ...(f.auth as AuthVerdicts) } } : {}),
          ...(typeof f.prefix === 'number' && f.prefix > 0 ? { prefix: f.prefix } : {}),
        }
        : null;
    case FRAME.END:
      return isMessageId(f.id) && isInt(f.chunks, 0, 2 ** 32) ? { type: 'end', id: f.id, chunks: f.chunks } : null;
    case FRAME.BOUNCE:
      return firstProblem(BOUNCE_CHECKS, f) === null
        ? {
          type: 'bounce', id: f.id as string, sender: f.sender as string, receivedAt: f.receivedAt as number, reason: f.reason as DsnReason,
          results: f.results as RecipientResult[], headers: f.headers as string,
          ...(typeof f.retryUntil === 'number' ? { retryUntil: f.retryUntil } : {}),
        }
        : null;
    default:
      return null;
  }
}

/** A fetched body's checksum and block; the block's base64 decodes to exactly `prefix` bytes. */
function isFetchedBody(v: unknown, prefix: number): v is FetchedBody {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const b = v as Obj;
  return Object.keys(b).length === 2 && typeof b.md5 === 'string' && MD5_RE.test(b.md5) &&
    typeof b.block === 'string' && b.block.length <= MAX_BLOCK_BASE64 && b.block.length % 4 === 0 && BASE64_RE.test(b.block) &&
    b.block.length / 4 * 3 - (b.block.endsWith('==') ? 2 : b.block.endsWith('=') ? 1 : 0) === prefix;
}

/** Serializes a frame; the one place either end turns a frame into text. */
export function encodeFrame(frame: AgentFrame | ObjectFrame): string {
  return JSON.stringify(frame);
}

/** An ack is complete when it answers each recipient of the message exactly once. */
export function ackCovers(results: RecipientResult[], recipients: string[]): boolean {
  if (results.length !== recipients.length) return false;
  const want = new Set(recipients);
  const seen = new Set<string>();
  for (const r of results) {
    if (!want.has(r.recipient) || seen.has(r.recipient)) return false;
    seen.add(r.recipient);
  }
  return true;
}
