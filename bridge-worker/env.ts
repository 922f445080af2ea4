// The Worker's env: its Durable Object and R2 bindings plus its settings
// (config.ts), parsed once per env object and cached.
import { parseConfig, type Config, type Vars } from './config.ts';
import type { RelayQueue } from './relay-do.ts';

export { ConfigError, type Config, type LogLevel } from './config.ts';

export interface Env extends Vars {
  RELAY: DurableObjectNamespace<RelayQueue>;
  /**
   * Message bodies (bodies.ts), bound in wrangler.toml. Unset: bodies go into the object's
   * SQLite chunks (chunk-path.ts), with a warning (email.ts).
   */
  BODIES?: R2Bucket;
  /** Tests only (test/model/): the queue's clock may be set (clock.ts). No wrangler file sets it. */
  TEST_CLOCK?: string;
}

// Parsed once per env object: it is read on every request, frame and ack.
const parsed = new WeakMap<Env, Config>();

export function readConfig(env: Env): Config {
  const known = parsed.get(env);
  if (known) return known;
  const cfg = parseConfig(env);
  parsed.set(env, cfg);
  return cfg;
}
