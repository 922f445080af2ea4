// The env the queue object sees: its R2 binding plus the settings (config.ts), parsed once
// per env object and cached. The Worker's env adds the binding to the object (worker-env.ts):
// kept apart so the object's modules never import the class that imports them.
import { parseConfig, type Config, type Vars } from './config.ts';

export { WorkerConfigError, type Config, type LogLevel } from './config.ts';

export interface Env extends Vars {
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
