// DATA_DIR/admin.json, written: npm start keeps one ADMIN_TOKEN per data dir here (mode
// 0600, like any secret file), writes the Worker's URL at start (its port is new each time)
// and sets it to null at stop. Its shape is protocol/admin-file.ts, which relayctl reads too.
import { randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ADMIN_FILE, parseAdminFile, type AdminFile } from '../protocol/admin-file.ts';

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
