// Where the Worker is and which token opens its admin API. The token is never an
// argument (argv is visible to every user in `ps`): it comes from a file or the
// environment. Precedence: --token-file, RELAYCTL_TOKEN, RELAYCTL_TOKEN_FILE.
import { readFileSync } from 'node:fs';
import { CliError, parseBaseUrl } from './api.ts';

export interface Config { baseUrl: URL; token: string }

type Env = Record<string, string | undefined>;

export function resolveConfig(flags: { url?: string | undefined; tokenFile?: string | undefined }, env: Env): Config {
  const url = flags.url ?? nonEmpty(env.RELAYCTL_URL);
  if (url === undefined) throw new CliError('usage', 'no Worker URL: give --url <url> or set RELAYCTL_URL');
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
