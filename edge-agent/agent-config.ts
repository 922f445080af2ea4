// What the agent runs with (AgentConfig: the Worker, the target, the window, bounces, the
// doveadm check) and its checks, run before anything connects: a bad value stops the agent
// with a message that names the key. Where the values come from (file, environment,
// credentials) is daemon-settings.ts; local/ builds an AgentConfig of its own.
import { isAbsolute } from 'node:path';
import { hostname } from 'node:os';
import { parseTarget } from '../lmtp-proxy/target.ts';
import { MAX_CREDIT_BYTES, MAX_WINDOW } from '../protocol/wire.ts';

export interface AgentConfig {
  /** ws:// or wss:// URL of the Worker's /agent endpoint. */
  workerUrl: string;
  token: string;
  /** lmtp://host:port, lmtp+unix:/path or smtp://host:port. */
  target: string;
  /** Name in logs, the hello frame and the trace header. */
  name: string;
  /** Deliveries in parallel = unacked messages the object may push. */
  concurrency: number;
  /** Bytes of chunk data in transit at once (memory bound per connection). */
  creditBytes: number;
  /** Heartbeat interval; the connection is dropped after 3 missed pongs. */
  heartbeatMs: number;
  /** Add the Received: trace header (docs/protocol.md). */
  traceHeader: boolean;
  /** Longest wait between reconnect attempts. */
  maxReconnectMs: number;
  /** Queue shards of the Worker (its SHARDS): one connection to each. */
  shards: number;
  /** The deliverable addresses, published to the object (recipients.ts); null = no list. */
  recipientsFile: string | null;
  /** The home server's recipient_delimiter ('' = none): 'a+x@d' is known when 'a@d' is. */
  recipientDelimiter: string;
  /** smtp://host:port that sends bounces (DSNs) out; null = this agent takes no bounce tasks. */
  bounceRelay: string | null;
  /** The DSN's Reporting-MTA and the domain of its From: MAILER-DAEMON@<domain>. */
  reportingMta: string;
  /**
   * The authserv-id of the Authentication-Results the agent writes (RFC 8601): the one name the
   * home filter trusts; a field in the message that claims it is renamed (forged-results.ts).
   */
  authservId: string;
  /**
   * The Worker's STATUS_TOKEN (read-only: GET /admin/queue), for the queue's numbers in
   * /metrics (queue-status.ts); null = the agent exports only its own.
   */
  statusToken: string | null;
  /**
   * Base URL of Dovecot's doveadm HTTP API (http://127.0.0.1:8080); null = off. When set, a
   * message whose last attempt ended without a final reply is searched for in Dovecot before
   * it is delivered again (doveadm.ts); no answer from the API defers it.
   */
  doveadmUrl: string | null;
  /** Dovecot's doveadm_api_key; set exactly when doveadmUrl is. */
  doveadmApiKey: string | null;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const DEFAULTS = {
  name: 'edge-agent',
  // Like Postfix's 20 parallel deliveries per destination: a backlog drains 15-35% faster at
  // 16 than at 4 (docs/performance.md). Connections open only as load needs them, and the
  // bytes in transit stay bounded by creditBytes, whatever the window.
  concurrency: 16,
  creditBytes: 8 * 1024 * 1024,
  heartbeatMs: 10_000,
  traceHeader: true,
  // A wait doubles up to this after sessions the object ends early or failed attempts (backoff.ts).
  maxReconnectMs: 120_000,
  shards: 1,
  recipientsFile: null,
  recipientDelimiter: '',
  bounceRelay: null,
  statusToken: null,
  doveadmUrl: null,
  doveadmApiKey: null,
} as const;

const DOMAIN = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

/** The host's name when it is a usable domain (the DSN's default Reporting-MTA), else 'localhost'. */
export function defaultReportingMta(): string {
  const h = hostname();
  return DOMAIN.test(h) ? h : 'localhost';
}

function int(key: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new ConfigError(`${key}: must be an integer from ${min} to ${max}, got ${v}`);
  return v;
}

function checkDoveadm(c: AgentConfig): void {
  if (c.doveadmApiKey !== null) {
    if (c.doveadmApiKey === '' || /[\x00-\x1f\x7f]/.test(c.doveadmApiKey)) throw new ConfigError('doveadmApiKey: must be Dovecot\'s doveadm_api_key: not empty, no control characters');
    if (c.doveadmUrl === null) throw new ConfigError('doveadmApiKey: set doveadmUrl too (the doveadm HTTP API, e.g. http://127.0.0.1:8080)');
  }
  if (c.doveadmUrl === null) return;
  let url: URL;
  try {
    url = new URL(c.doveadmUrl);
  } catch {
    throw new ConfigError(`doveadmUrl: not a URL: ${JSON.stringify(c.doveadmUrl)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`doveadmUrl: must start with http:// or https://, got ${JSON.stringify(c.doveadmUrl)}`);
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new ConfigError('doveadmUrl: no query, fragment or credentials (the key is doveadmApiKeyFile)');
  }
  if (/\/doveadm\/v1\/?$/.test(url.pathname)) throw new ConfigError(`doveadmUrl: the base URL only, without /doveadm/v1, e.g. ${url.origin}`);
  // Only Dovecot's LMTP stores at once what it answered for; an SMTP target may queue it first.
  if (parseTarget(c.target).protocol !== 'lmtp') throw new ConfigError('doveadmUrl: only for an LMTP target (Dovecot), not smtp://');
  if (!c.traceHeader) throw new ConfigError('doveadmUrl: needs traceHeader: the search looks for the queue id in it');
  if (c.doveadmApiKey === null) throw new ConfigError('doveadmUrl: needs the API key too: doveadmApiKeyFile (or doveadmApiKey)');
}

export function validateConfig(input: Partial<AgentConfig> & Pick<AgentConfig, 'workerUrl' | 'token' | 'target'>): AgentConfig {
  const c: AgentConfig = {
    ...DEFAULTS, reportingMta: input.reportingMta ?? defaultReportingMta(), authservId: input.authservId ?? defaultReportingMta(), ...input,
  };
  let url: URL;
  try {
    url = new URL(c.workerUrl);
  } catch {
    throw new ConfigError(`workerUrl: not a URL: ${JSON.stringify(c.workerUrl)}`);
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new ConfigError('workerUrl: must start with wss:// (or ws:// for local use)');
  if (url.search !== '') throw new ConfigError('workerUrl: must not carry a query string (the token goes in a header)');
  if (c.token.length < 16 || /[^\x21-\x7e]/.test(c.token)) throw new ConfigError('token: must be at least 16 printable characters');
  if (c.statusToken !== null) {
    if (c.statusToken.length < 16 || /[^\x21-\x7e]/.test(c.statusToken)) throw new ConfigError('statusToken: must be at least 16 printable characters');
    if (c.statusToken === c.token) throw new ConfigError('statusToken: must be the Worker\'s STATUS_TOKEN, not the agent token');
  }
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(c.name)) throw new ConfigError('name: letters, digits, ".", "_" and "-" only, at most 64');
  try {
    parseTarget(c.target);
  } catch (err) {
    throw new ConfigError(`target: ${(err as Error).message}`);
  }
  int('concurrency', c.concurrency, 1, MAX_WINDOW);
  int('creditBytes', c.creditBytes, 1024 * 1024, MAX_CREDIT_BYTES);
  int('heartbeatMs', c.heartbeatMs, 100, 300_000);
  int('maxReconnectMs', c.maxReconnectMs, 100, 3_600_000);
  int('shards', c.shards, 1, 64);
  if (c.recipientsFile !== null && !isAbsolute(c.recipientsFile)) {
    throw new ConfigError(`recipientsFile: must be an absolute path, got ${JSON.stringify(c.recipientsFile)}`);
  }
  // The wire's rule (parseAgentFrame): one of + - _ . = or none; Postfix's usual is '+'.
  if (!/^[+\-_.=]?$/.test(c.recipientDelimiter)) {
    throw new ConfigError(`recipientDelimiter: must be one of + - _ . = or empty, got ${JSON.stringify(c.recipientDelimiter)}`);
  }
  if (c.bounceRelay !== null) {
    let relay;
    try {
      relay = parseTarget(c.bounceRelay);
    } catch (err) {
      throw new ConfigError(`bounceRelay: ${(err as Error).message}`);
    }
    // A bounce goes out to the Internet: through an MTA that queues it, never into LMTP.
    if (relay.protocol !== 'smtp') throw new ConfigError(`bounceRelay: must be smtp://host:port, got ${JSON.stringify(c.bounceRelay)}`);
  }
  checkDoveadm(c);
  // A token of RFC 2045 as a host name: it goes into a header field and is compared as written.
  if (!DOMAIN.test(c.authservId)) throw new ConfigError(`authservId: must be a host name, got ${JSON.stringify(c.authservId)}`);
  if (!DOMAIN.test(c.reportingMta)) throw new ConfigError(`reportingMta: must be a domain name, got ${JSON.stringify(c.reportingMta)}`);
  return c;
}
