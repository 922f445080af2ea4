// DATA_DIR holds queued mail (the object's SQLite files, R2 blobs under worker/), the
// agent's journal and the admin token: readable by this user alone. Miniflare writes its
// files 0644 under the process umask, so the directory's own mode is what keeps them private.
import { chmodSync, mkdirSync, statSync } from 'node:fs';
import type { Logger } from '../edge-agent/ops/log.ts';

const PRIVATE = 0o700;

/**
 * Creates `dir` 0700; an existing one open to group or others is tightened to 0700, with a
 * warning naming the mode it had (or, if it cannot be changed, a warning saying so).
 */
export function privateDataDir(dir: string, log: Logger): void {
  mkdirSync(dir, { recursive: true, mode: PRIVATE });
  const mode = statSync(dir).mode & 0o777;
  if ((mode & 0o077) === 0) return;
  const was = mode.toString(8).padStart(4, '0');
  try {
    chmodSync(dir, PRIVATE);
    log('relay.data-dir-tightened', { dir, was, now: '0700' });
  } catch (err) {
    log('relay.data-dir-open', { dir, mode: was, error: String(err) });
  }
}
