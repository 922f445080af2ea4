// Where the Worker is and which token opens its admin API. The token is never an
// argument (argv is visible to every user in `ps`): it comes from a file or the
// environment. Precedence: --token-file, RELAYCTL_TOKEN, RELAYCTL_TOKEN_FILE.
// With no URL or no token set, the local relay's DATA_DIR/admin.json (written by
// `npm start`, see protocol/admin-file.ts) fills the gap, found from the working
// directory as npm start resolves DATA_DIR (default ./data); what is set explicitly wins.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ADMIN_FILE, parseAdminFile, type AdminFile } from '../protocol/admin-file.ts';
import { CliError, parseBaseUrl } from './api.ts';

export interface Config { baseUrl: URL; token: string }

type Env = Record<string, string | undefined>;

/** The local relay's admin.json under `cwd`, or null if there is none. */
function localRelay(cwd: string, env: Env): { path: string; file: AdminFile } | null {
  const path = resolve(cwd, nonEmpty(env.DATA_DIR) ?? 'data', ADMIN_FILE);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new CliError('config', `cannot read the local relay's ${path}: ${(err as Error).message}`);
  }
  const file = parseAdminFile(text);
  if (typeof file === 'string') throw new CliError('config', `${path}: ${file}`);
  return { path, file };
}

/** `cwd`: where to look for the local relay's admin.json; undefined = do not look. */
export function resolveConfig(flags: { url?: string | undefined; tokenFile?: string | undefined }, env: Env, cwd?: string): Config {
  const explicitUrl = flags.url ?? nonEmpty(env.RELAYCTL_URL);
  const explicitToken = flags.tokenFile !== undefined || nonEmpty(env.RELAYCTL_TOKEN) !== undefined || nonEmpty(env.RELAYCTL_TOKEN_FILE) !== undefined;
  const local = cwd !== undefined && (explicitUrl === undefined || !explicitToken) ? localRelay(cwd, env) : null;
  if (explicitUrl === undefined && local !== null && local.file.url === null) {
    throw new CliError('unreachable', `the local relay is not running (${local.path} says it stopped); start it with npm start, or give --url`);
  }
  const url = explicitUrl ?? local?.file.url ?? undefined;
  if (url === undefined) throw new CliError('usage', 'no Worker URL: give --url <url> or set RELAYCTL_URL (or run npm start here first)');
  const baseUrl = parseBaseUrl(url);

  let token: string;
  let from: string;
  const file = flags.tokenFile ?? (nonEmpty(env.RELAYCTL_TOKEN) === undefined ? nonEmpty(env.RELAYCTL_TOKEN_FILE) : undefined);
  if (file !== undefined) {
    from = flags.tokenFile !== undefined ? `--token-file ${file}` : `RELAYCTL_TOKEN_FILE ${file}`;
    try {
      token = readFileSync(file, 'utf8');
    } catch (err) {
      throw new CliError('config', `cannot read the token from ${from}: ${(err as Error).message}`);
    }
  } else if (nonEmpty(env.RELAYCTL_TOKEN) !== undefined) {
    from = 'RELAYCTL_TOKEN';
    token = env.RELAYCTL_TOKEN ?? '';
  } else if (local !== null && local.file.url !== null && new URL(local.file.url).origin === baseUrl.origin) {
    // Only to the local relay's own URL: its token is never sent to a URL given for another Worker.
    from = local.path;
    token = local.file.token;
  } else {
    throw new CliError('usage', 'no admin token: give --token-file <file>, or set RELAYCTL_TOKEN or RELAYCTL_TOKEN_FILE');
  }
  token = token.trim();
  if (token === '') throw new CliError('config', `the token from ${from} is empty`);
  // A header value cannot hold these; say so instead of letting fetch fail obscurely.
  if (/[^\x21-\x7e]/.test(token)) {
    throw new CliError('config', `the token from ${from} holds spaces, line breaks or non-ASCII characters; it must be the ADMIN_TOKEN alone`);
  }
  return { baseUrl, token };
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}
