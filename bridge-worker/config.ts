// The Worker's settings (wrangler.toml [vars] and secrets) and their one parser, so
// that a bad value fails with a message naming the variable, not deep inside a
// handler. No Workers types here: npm start (local/settings.ts) checks its
// environment with this same parser before workerd starts.
import { DEFAULT_MAX_UNSETTLED_LEASES, DEFAULT_RETENTION_MS, DEFAULT_RETRY, type RetryPolicy } from './retry-policy.ts';
import { MAX_SHARDS } from './shard-hash.ts';

/** Each value as the Worker's env holds it: a string, or unset. */
export interface Vars {
  /** Comma-separated bearer tokens agents may use (two during a rotation). Secret. */
  AGENT_TOKENS?: string;
  /** Comma-separated domains we receive mail for; empty = every domain routed to us. */
  ALLOWED_DOMAINS?: string;
  /** Optional comma-separated full addresses: when set, only these recipients are accepted. */
  ALLOWED_RECIPIENTS?: string;
  /** Largest message accepted, bytes (Email Routing itself stops at 25 MiB). */
  MAX_MESSAGE_BYTES?: string;
  /** How long email() waits for the agent's verdict, ms (0 = never wait). Default 15000. */
  VERDICT_WAIT_MS?: string;
  /** How long a delivered message's dedupe key is remembered, ms. Default 24 h. */
  DEDUPE_WINDOW_MS?: string;
  /** How long messages of a dropped connection wait for the same agent, ms. Default 120 s. */
  AFFINITY_MS?: string;
  /** An agent socket without a heartbeat for this long is closed, ms. Default 90 s (agent pings every 10 s). */
  AGENT_SILENT_MS?: string;
  /** Number of queue objects recipients are spread over (1-64). Default 1. Only ever raise it. */
  SHARDS?: string;
  /** Bearer token of the admin API (/admin/...). Secret. Unset = the API is off (404). */
  ADMIN_TOKEN?: string;
  /**
   * Read-only bearer token for GET /admin/queue alone (counts, ages, bounces sent: what the
   * agent exports as metrics). Never lists, shows or exports a message. Secret. Unset = none.
   */
  STATUS_TOKEN?: string;
  /** Retry schedule of deferred messages, ms: first retry, longest gap, age at dead-letter. */
  RETRY_FIRST_MS?: string;
  RETRY_MAX_MS?: string;
  MAX_AGE_MS?: string;
  /** Leases that may end without an answer before a message is given up (bounced). Default 5. */
  MAX_UNSETTLED_LEASES?: string;
  /** How long a bounced message stays visible after its DSN went out, ms. Default 5 days. */
  RETENTION_MS?: string;
  /**
   * Postfix's delay_warning_time: a message still deferred this long after arrival gets its
   * sender one "delayed" DSN, ms. Unset or 0 = off (the default).
   */
  DELAY_WARNING_MS?: string;
  /**
   * How often each queue object lists its R2 prefix for orphans (bodies no row owns: a put whose
   * ingest never committed), ms. Default 1 h. Only objects older than 1 h are ever deleted.
   */
  ORPHAN_SWEEP_MS?: string;
  /** Dev-only: enables POST /dev/email for the local SMTP ingress. Never set in production. */
  DEV_INGRESS_TOKEN?: string;
  /** `info` (default): one event per message and side. `debug` adds ingest.queued and message.leased. */
  LOG_LEVEL?: string;
  /**
   * A message of at most this many bytes (Cloudflare's block included) is kept in the queue
   * object's SQLite and rides the agent's WebSocket: no R2 put, no body fetch. Larger ones go to
   * R2. Default 131072 (128 KiB); 0 = every body to R2; at most 262144 (the CPU limit).
   */
  INLINE_MAX_BYTES?: string;
}

/** Secrets: `wrangler secret put`, never [vars]. */
export const SECRET_NAMES = ['AGENT_TOKENS', 'ADMIN_TOKEN', 'STATUS_TOKEN', 'DEV_INGRESS_TOKEN'] as const satisfies readonly (keyof Vars)[];
/** Plain [vars], in the order of Vars. The local relay (local/settings.ts) reads these from its environment. */
export const VAR_NAMES = [
  'ALLOWED_DOMAINS', 'ALLOWED_RECIPIENTS', 'MAX_MESSAGE_BYTES', 'VERDICT_WAIT_MS', 'DEDUPE_WINDOW_MS', 'AFFINITY_MS',
  'AGENT_SILENT_MS', 'SHARDS', 'RETRY_FIRST_MS', 'RETRY_MAX_MS', 'MAX_AGE_MS', 'MAX_UNSETTLED_LEASES', 'RETENTION_MS',
  'DELAY_WARNING_MS', 'ORPHAN_SWEEP_MS', 'LOG_LEVEL', 'INLINE_MAX_BYTES',
] as const satisfies readonly (keyof Vars)[];
// A setting added to Vars but to neither list fails to compile here, so the local relay cannot miss it.
type Unlisted = Exclude<keyof Vars, (typeof SECRET_NAMES)[number] | (typeof VAR_NAMES)[number]>;
const everyVarListed: [Unlisted] extends [never] ? true : Unlisted = true;

export interface Config {
  agentTokens: string[];
  allowedDomains: string[];
  allowedRecipients: string[];
  maxMessageBytes: number;
  verdictWaitMs: number;
  retry: RetryPolicy;
  dedupeWindowMs: number;
  affinityMs: number;
  shards: number;
  agentSilentMs: number;
  maxUnsettledLeases: number;
  retentionMs: number;
  /** Delay warning after this long undelivered, ms; 0 = off. */
  delayWarningMs: number;
  /** Between two orphan sweeps of the BODIES bucket, ms. */
  orphanSweepMs: number;
  adminToken: string | null;
  statusToken: string | null;
  devIngressToken: string | null;
  logLevel: LogLevel;
  /** Bodies of at most this many bytes stay in the object (chunk rows); larger ones go to R2. */
  inlineMaxBytes: number;
}

export type LogLevel = 'info' | 'debug';

export const DEFAULT_MAX_MESSAGE_BYTES = 25 * 1024 * 1024;
/** Well inside email()'s ~30 s: the message is already stored, only the verdict is waited for. */
export const DEFAULT_VERDICT_WAIT_MS = 15_000;
const MAX_VERDICT_WAIT_MS = 25_000;
/** Measured (docs/performance.md, bench:cloud --inline): at this size the chunk path's invocations stay within 10 ms, cold ones included. */
export const DEFAULT_INLINE_MAX_BYTES = 128 * 1024;
export const MAX_INLINE_MAX_BYTES = 256 * 1024;

export class WorkerConfigError extends Error {
  override name = 'WorkerConfigError';
}

function list(v: string | undefined): string[] {
  return (v ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
}

/** A duration in ms from 100 ms to 30 days; unset or empty = the default. */
function ms(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 100 || n > 30 * 24 * 60 * 60_000) throw new WorkerConfigError(`${name}: must be an integer number of ms from 100 to 2592000000`);
  return n;
}

/** Validates every setting; throws a WorkerConfigError naming the first bad one. Uncached: see readConfig. */
export function parseConfig(env: Vars): Config {
  const agentTokens = list(env.AGENT_TOKENS);
  for (const t of agentTokens) {
    if (t.length < 16) throw new WorkerConfigError('AGENT_TOKENS: each token must be at least 16 characters');
  }
  const allowedDomains = list(env.ALLOWED_DOMAINS).map((d) => d.toLowerCase());
  for (const d of allowedDomains) {
    if (!/^[a-z0-9.-]+$/.test(d)) throw new WorkerConfigError(`ALLOWED_DOMAINS: not a domain: ${JSON.stringify(d)}`);
  }
  const allowedRecipients = list(env.ALLOWED_RECIPIENTS).map((a) => a.toLowerCase());
  for (const a of allowedRecipients) {
    if (!/^[^\s@<>]+@[a-z0-9.-]+$/.test(a)) throw new WorkerConfigError(`ALLOWED_RECIPIENTS: not an address: ${JSON.stringify(a)}`);
  }
  let maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;
  if (env.MAX_MESSAGE_BYTES !== undefined && env.MAX_MESSAGE_BYTES !== '') {
    maxMessageBytes = Number(env.MAX_MESSAGE_BYTES);
    if (!Number.isInteger(maxMessageBytes) || maxMessageBytes < 1024 || maxMessageBytes > 100 * 1024 * 1024) {
      throw new WorkerConfigError('MAX_MESSAGE_BYTES: must be an integer from 1024 to 104857600');
    }
  }
  let verdictWaitMs = DEFAULT_VERDICT_WAIT_MS;
  if (env.VERDICT_WAIT_MS !== undefined && env.VERDICT_WAIT_MS !== '') {
    verdictWaitMs = Number(env.VERDICT_WAIT_MS);
    if (!Number.isInteger(verdictWaitMs) || verdictWaitMs < 0 || verdictWaitMs > MAX_VERDICT_WAIT_MS) {
      throw new WorkerConfigError(`VERDICT_WAIT_MS: must be an integer from 0 to ${MAX_VERDICT_WAIT_MS}`);
    }
  }
  const retry = {
    firstRetryMs: ms('RETRY_FIRST_MS', env.RETRY_FIRST_MS, DEFAULT_RETRY.firstRetryMs),
    maxRetryMs: ms('RETRY_MAX_MS', env.RETRY_MAX_MS, DEFAULT_RETRY.maxRetryMs),
    maxAgeMs: ms('MAX_AGE_MS', env.MAX_AGE_MS, DEFAULT_RETRY.maxAgeMs),
  };
  if (retry.maxRetryMs < retry.firstRetryMs) throw new WorkerConfigError('RETRY_MAX_MS: must not be less than RETRY_FIRST_MS');
  if (retry.maxAgeMs < retry.firstRetryMs) throw new WorkerConfigError('MAX_AGE_MS: must not be less than RETRY_FIRST_MS');
  // Email Routing retries a message whose email() failed or timed out: a retry of the same
  // envelope and bytes within this window is accepted without a second copy.
  const dedupeWindowMs = ms('DEDUPE_WINDOW_MS', env.DEDUPE_WINDOW_MS, 24 * 60 * 60_000);
  // Long enough for a crashed agent to be restarted (systemd RestartSec=5) and reconnect.
  const affinityMs = env.AFFINITY_MS === '0' ? 0 : ms('AFFINITY_MS', env.AFFINITY_MS, 120_000);
  let shards = 1;
  if (env.SHARDS !== undefined && env.SHARDS !== '') {
    shards = Number(env.SHARDS);
    if (!Number.isInteger(shards) || shards < 1 || shards > MAX_SHARDS) throw new WorkerConfigError(`SHARDS: must be an integer from 1 to ${MAX_SHARDS}`);
  }
  const agentSilentMs = ms('AGENT_SILENT_MS', env.AGENT_SILENT_MS, 90_000);
  let maxUnsettledLeases = DEFAULT_MAX_UNSETTLED_LEASES;
  if (env.MAX_UNSETTLED_LEASES !== undefined && env.MAX_UNSETTLED_LEASES !== '') {
    maxUnsettledLeases = Number(env.MAX_UNSETTLED_LEASES);
    if (!Number.isInteger(maxUnsettledLeases) || maxUnsettledLeases < 1 || maxUnsettledLeases > 1000) {
      throw new WorkerConfigError('MAX_UNSETTLED_LEASES: must be an integer from 1 to 1000');
    }
  }
  const retentionMs = ms('RETENTION_MS', env.RETENTION_MS, DEFAULT_RETENTION_MS);
  const delayWarningMs = env.DELAY_WARNING_MS === '0' ? 0 : ms('DELAY_WARNING_MS', env.DELAY_WARNING_MS, 0);
  const orphanSweepMs = ms('ORPHAN_SWEEP_MS', env.ORPHAN_SWEEP_MS, 60 * 60_000);
  const admin = env.ADMIN_TOKEN ?? '';
  if (admin !== '' && admin.length < 16) throw new WorkerConfigError('ADMIN_TOKEN: must be at least 16 characters');
  const status = env.STATUS_TOKEN ?? '';
  if (status !== '' && status.length < 16) throw new WorkerConfigError('STATUS_TOKEN: must be at least 16 characters');
  // One token, one role: a status token that also opens the admin API or an agent session is not read-only.
  if (status !== '' && (status === admin || agentTokens.includes(status))) throw new WorkerConfigError('STATUS_TOKEN: must differ from ADMIN_TOKEN and every agent token');
  const dev = env.DEV_INGRESS_TOKEN ?? '';
  if (dev !== '' && dev.length < 16) throw new WorkerConfigError('DEV_INGRESS_TOKEN: must be at least 16 characters');
  const logLevel = env.LOG_LEVEL === undefined || env.LOG_LEVEL === '' ? 'info' : env.LOG_LEVEL;
  if (logLevel !== 'info' && logLevel !== 'debug') throw new WorkerConfigError(`LOG_LEVEL: must be info or debug, not ${JSON.stringify(logLevel)}`);
  let inlineMaxBytes = DEFAULT_INLINE_MAX_BYTES;
  if (env.INLINE_MAX_BYTES !== undefined && env.INLINE_MAX_BYTES !== '') {
    inlineMaxBytes = Number(env.INLINE_MAX_BYTES);
    if (!Number.isInteger(inlineMaxBytes) || inlineMaxBytes < 0 || inlineMaxBytes > MAX_INLINE_MAX_BYTES) {
      throw new WorkerConfigError(`INLINE_MAX_BYTES: must be an integer from 0 to ${MAX_INLINE_MAX_BYTES}`);
    }
  }
  return { inlineMaxBytes, agentTokens, allowedDomains, allowedRecipients, maxMessageBytes, verdictWaitMs, retry, dedupeWindowMs, affinityMs, shards, agentSilentMs, maxUnsettledLeases, retentionMs, delayWarningMs, orphanSweepMs, adminToken: admin === '' ? null : admin, statusToken: status === '' ? null : status, devIngressToken: dev === '' ? null : dev, logLevel };
}
