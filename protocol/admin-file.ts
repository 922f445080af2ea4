// DATA_DIR/admin.json: how relayctl finds the local relay's admin API with no settings.
// npm start writes it (local/admin-file.ts), relayctl reads it (relayctl/config.ts); the
// shape and its check live here, outside both, so the shipped CLI imports nothing of the
// dev harness.

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
  if (o.url !== null && (typeof o.url !== 'string' || !isUrl(o.url))) return 'url: must be a URL or null';
  if (o.pid !== null && !Number.isInteger(o.pid)) return 'pid: must be a whole number or null';
  return { url: o.url, token: o.token, pid: o.pid as number | null };
}

function isUrl(s: string): boolean {
  try {
    new URL(s);
    return true;
  } catch {
    return false;
  }
}
