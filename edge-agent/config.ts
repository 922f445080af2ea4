// The agent's settings, validated before anything connects: a bad value stops
// the agent with a message that names the key.
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
} as const;

function int(key: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new ConfigError(`${key}: must be an integer from ${min} to ${max}, got ${v}`);
  return v;
}

export function validateConfig(input: Partial<AgentConfig> & Pick<AgentConfig, 'workerUrl' | 'token' | 'target'>): AgentConfig {
  const c: AgentConfig = { ...DEFAULTS, ...input };
  let url: URL;
  try {
    url = new URL(c.workerUrl);
  } catch {
    throw new ConfigError(`workerUrl: not a URL: ${JSON.stringify(c.workerUrl)}`);
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new ConfigError('workerUrl: must start with wss:// (or ws:// for local use)');
  if (url.search !== '') throw new ConfigError('workerUrl: must not carry a query string (the token goes in a header)');
  if (c.token.length < 16 || /[^\x21-\x7e]/.test(c.token)) throw new ConfigError('token: must be at least 16 printable characters');
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
  return c;
}
