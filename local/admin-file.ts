// DATA_DIR/admin.json: how relayctl finds the local relay's admin API with no
// settings. npm start keeps one ADMIN_TOKEN per data dir here (mode 0600, like
// any secret file), writes the Worker's URL at start (its port is new each
// time) and sets it to null at stop. relayctl/config.ts reads it; the shape is
// defined only here, for both.
import { randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const ADMIN_FILE = 'admin.json';

export interface AdminFile {
  /** The Worker's base URL while the relay runs; null once it stopped. */
  url: string | null;
  token: string;
  /** The npm start process, while it runs. */
  pid: number | null;
}

/** The file's contents, checked; a message saying what is wrong if it is not one of ours. */
export function parseAdminFile(text: string): AdminFile | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    return `not valid JSON: ${(err as Error).message}`;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'must hold one JSON object';
  const o = v as Record<string, unknown>;
  if (typeof o.token !== 'string' || !/^[\x21-\x7e]{16,}$/.test(o.token)) return 'token: must be a string of at least 16 printable characters';
  if (o.url !== null && (typeof o.url !== 'string' || !URL.canParse(o.url))) return 'url: must be a URL or null';
  if (o.pid !== null && !Number.isInteger(o.pid)) return 'pid: must be a whole number or null';
  return { url: o.url, token: o.token, pid: o.pid as number | null };
}

function write(dataDir: string, f: AdminFile): void {
  const path = join(dataDir, ADMIN_FILE);
  const tmp = `${path}.${process.pid}.tmp`;
  // Written whole and renamed: relayctl never reads half a file. The mode is set on creation
  // and again in case the umask took bits away (it cannot add any).
  writeFileSync(tmp, JSON.stringify(f, null, 2) + '\n', { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** The data dir's admin token: the one kept in admin.json, or a new one. */
export function adminToken(dataDir: string): string {
  try {
    const f = parseAdminFile(readFileSync(join(dataDir, ADMIN_FILE), 'utf8'));
    if (typeof f !== 'string') return f.token;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return randomBytes(24).toString('base64url');
}

export function writeRunning(dataDir: string, url: URL, token: string): void {
  write(dataDir, { url: url.origin, token, pid: process.pid });
}

/** At stop: the token stays (same one next start), the URL goes. */
export function writeStopped(dataDir: string, token: string): void {
  write(dataDir, { url: null, token, pid: null });
}
