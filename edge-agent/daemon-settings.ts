// Where the daemon's settings come from (DaemonSettings: the agent's AgentConfig, checked by
// agent-config.ts, plus the daemon's own: state dir, HTTP, logs, stop grace): a JSON file (`--config <path>`, default
// /etc/mailbridge/agent.json) whose keys the MAILBRIDGE_* environment variables
// override one by one. JSON because Node parses it without a dependency and it
// has one obvious type per value; TOML would need a parser we do not ship.
// Everything is checked before anything starts: an unknown key, a wrong type or
// a bad value is a ConfigError whose message names the key where it was set
// (`/etc/mailbridge/agent.json: concurrency: ...` or `MAILBRIDGE_CONCURRENCY: ...`).
// The token may also be a systemd credential, $CREDENTIALS_DIRECTORY/token, used only when
// neither the file nor the environment names one.
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { ConfigError, validateConfig, type AgentConfig } from './agent-config.ts';
import { LOG_FORMATS, type LogFormat } from './ops/log.ts';

export const DEFAULT_CONFIG_PATH = '/etc/mailbridge/agent.json';
export const DEFAULT_TARGET = 'lmtp+unix:/var/run/dovecot/lmtp';
export const DEFAULT_STATE_DIR = '/var/lib/mailbridge';
export const DEFAULT_HTTP = '127.0.0.1:8025';
/** The token file the systemd unit loads as its credential (LoadCredential=token:…). */
const UNIT_TOKEN_FILE = '/etc/mailbridge/agent.token';
const CREDENTIAL = '$CREDENTIALS_DIRECTORY/token';

export interface Listen { host: string; port: number }

export interface DaemonSettings {
  agent: AgentConfig;
  stateDir: string;
  /** Where /healthz and /metrics listen; null = no HTTP server. */
  http: Listen | null;
  logSubject: boolean;
  /** json (default): one JSON object a line; maillog: Postfix-like text (log.ts). */
  logFormat: LogFormat;
  journalRetentionDays: number;
  /** How long in-flight deliveries may finish after SIGTERM before they are handed back. */
  stopGraceMs: number;
  /** The file read, or null when configured by the environment alone. */
  file: string | null;
}

type Kind = 'string' | 'int' | 'bool' | 'listen';
// Every key the file may hold; the environment variable is MAILBRIDGE_ + the key in UPPER_SNAKE.
const KEYS = {
  workerUrl: 'string', token: 'string', tokenFile: 'string', target: 'string', name: 'string',
  concurrency: 'int', creditBytes: 'int', heartbeatMs: 'int', traceHeader: 'bool', maxReconnectMs: 'int',
  stateDir: 'string', http: 'listen', logSubject: 'bool', journalRetentionDays: 'int', stopGraceMs: 'int', shards: 'int',
  recipientsFile: 'string', recipientDelimiter: 'string', bounceRelay: 'string', reportingMta: 'string',
  authservId: 'string', logFormat: 'string', statusToken: 'string', statusTokenFile: 'string',
  doveadmUrl: 'string', doveadmApiKey: 'string', doveadmApiKeyFile: 'string',
} as const satisfies Record<string, Kind>;
export type Key = keyof typeof KEYS;
/** Every setting's key, in the order --help lists them. */
export const SETTING_KEYS = Object.keys(KEYS) as Key[];
const isKey = (k: string): k is Key => Object.hasOwn(KEYS, k);

type Value = string | number | boolean;
/** A value and where it was set, to name it in an error. */
export interface Origin { value: Value; label: string; fromFile: boolean }

export const envName = (key: string): string => `MAILBRIDGE_${key.replace(/[A-Z]/g, '_$&').toUpperCase()}`;

const fail = (label: string, msg: string): never => { throw new ConfigError(`${label}: ${msg}`); };

function readFile(path: string, explicit: boolean): Record<string, unknown> | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    // No --config and no default file: the environment alone configures the agent.
    if (!explicit && (err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return fail(path, `cannot read: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return fail(path, `not valid JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return fail(path, 'must hold one JSON object');
  return parsed as Record<string, unknown>;
}

function fromFile(path: string, obj: Record<string, unknown>, into: Map<Key, Origin>): void {
  for (const [k, v] of Object.entries(obj)) {
    if (!isKey(k)) fail(path, `unknown key ${JSON.stringify(k)} (known: ${Object.keys(KEYS).join(', ')})`);
    const label = `${path}: ${k}`;
    const kind: Kind = KEYS[k as Key];
    const ok = kind === 'int' ? Number.isInteger(v) : kind === 'bool' ? typeof v === 'boolean'
      : kind === 'listen' ? typeof v === 'string' || v === false : typeof v === 'string';
    if (!ok) {
      const want = { int: 'a whole number', bool: 'true or false', listen: '"host:port" or false', string: 'a string' }[kind];
      fail(label, `must be ${want}, got ${JSON.stringify(v)}`);
    }
    if ((k === 'stateDir' || k === 'tokenFile' || k === 'statusTokenFile' || k === 'recipientsFile' || k === 'doveadmApiKeyFile') && !isAbsolute(v as string)) fail(label, `must be an absolute path, got ${JSON.stringify(v)}`);
    into.set(k as Key, { value: v as Value, label, fromFile: true });
  }
}

function fromEnv(env: NodeJS.ProcessEnv, into: Map<Key, Origin>): void {
  const known = new Set(Object.keys(KEYS).map(envName));
  for (const name of Object.keys(env)) {
    // A misspelt variable would otherwise be ignored without a word.
    if (name.startsWith('MAILBRIDGE_') && !known.has(name)) fail(name, `unknown variable (known: ${[...known].join(', ')})`);
  }
  for (const k of Object.keys(KEYS) as Key[]) {
    const name = envName(k);
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    let value: Value = raw;
    if (KEYS[k] === 'int') {
      if (!/^[0-9]+$/.test(raw)) fail(name, `not a whole number: ${JSON.stringify(raw)}`);
      value = Number(raw);
    } else if (KEYS[k] === 'bool') {
      if (!/^(true|false|1|0|yes|no)$/i.test(raw)) fail(name, `must be true or false, got ${JSON.stringify(raw)}`);
      value = /^(true|1|yes)$/i.test(raw);
    } else if (KEYS[k] === 'listen' && raw.toLowerCase() === 'off') value = false;
    into.set(k, { value, label: name, fromFile: false });
  }
}

export function parseListen(label: string, v: string): Listen {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/.exec(v);
  const port = Number(m?.[2]);
  if (!m || port > 65535) return fail(label, `expected host:port such as 127.0.0.1:8025 (or off), got ${JSON.stringify(v)}`);
  return { host: (m[1] ?? '').replace(/^\[(.*)\]$/, '$1'), port };
}

/** The MAILBRIDGE_* variables of `env`, typed; an unknown one is an error. The local relay (local/settings.ts) uses this too. */
export function agentEnv(env: NodeJS.ProcessEnv): Map<Key, Origin> {
  const set = new Map<Key, Origin>();
  fromEnv(env, set);
  return set;
}

type AgentInput = Parameters<typeof validateConfig>[0];

/** validateConfig over `base` plus the agent keys in `set`; an error names where the bad value was set. */
export function validateAgent(base: AgentInput, set: Map<Key, Origin>, tokenOrigin?: Origin): AgentConfig {
  const input: AgentInput = { ...base };
  const name = set.get('name');
  if (name) input.name = String(name.value);
  for (const k of ['concurrency', 'creditBytes', 'heartbeatMs', 'maxReconnectMs', 'shards'] as const) {
    const o = set.get(k);
    if (o) input[k] = o.value as number;
  }
  for (const k of ['recipientsFile', 'recipientDelimiter', 'bounceRelay', 'reportingMta', 'authservId', 'doveadmUrl'] as const) {
    const o = set.get(k);
    if (o) input[k] = String(o.value);
  }
  const trace = set.get('traceHeader');
  if (trace) input.traceHeader = trace.value as boolean;
  const keyOrigin = doveadmKey(set, input);
  try {
    return validateConfig(input);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // 'concurrency: ...' -> 'MAILBRIDGE_CONCURRENCY: ...' or '<file>: concurrency: ...': where the user set it.
    const m = /^(\w+): ([\s\S]*)$/.exec(err.message);
    const key = m?.[1] ?? '';
    const origin = key === 'token' ? tokenOrigin : key === 'doveadmApiKey' ? keyOrigin : isKey(key) ? set.get(key) : undefined;
    throw origin && m ? new ConfigError(`${origin.label}: ${m[2]}`) : err;
  }
}

/** Dovecot's doveadm_api_key into `input`, read from its file if so given; returns where it was set. */
function doveadmKey(set: Map<Key, Origin>, input: AgentInput): Origin | undefined {
  const file = set.get('doveadmApiKeyFile');
  const inline = set.get('doveadmApiKey');
  if (file && inline) fail(file.label, `set ${file.fromFile ? 'doveadmApiKeyFile or doveadmApiKey' : 'MAILBRIDGE_DOVEADM_API_KEY_FILE or MAILBRIDGE_DOVEADM_API_KEY'}, not both`);
  if (inline) input.doveadmApiKey = String(inline.value);
  if (file) {
    try {
      input.doveadmApiKey = readFileSync(String(file.value), 'utf8').trim();
    } catch (err) {
      fail(file.label, `cannot read ${String(file.value)}: ${(err as Error).message}`);
    }
  }
  return file ?? inline;
}

/** The daemon's settings besides AgentConfig that also apply to an agent run in-process. */
export function agentExtras(set: Map<Key, Origin>): Pick<DaemonSettings, 'logSubject' | 'journalRetentionDays' | 'stopGraceMs'> {
  const logSubject = set.get('logSubject');
  return {
    logSubject: logSubject ? (logSubject.value as boolean) : false,
    journalRetentionDays: intIn(set.get('journalRetentionDays'), 7, 1, 3650),
    stopGraceMs: intIn(set.get('stopGraceMs'), 20_000, 0, 600_000),
  };
}

/** logFormat (MAILBRIDGE_LOG_FORMAT): json unless set. The local relay (local/settings.ts) uses this too. */
export function logFormatOf(set: Map<Key, Origin>): LogFormat {
  const o = set.get('logFormat');
  const v = String(o?.value ?? 'json');
  if (!(LOG_FORMATS as readonly string[]).includes(v)) fail(o?.label ?? 'logFormat', `must be ${LOG_FORMATS.join(' or ')}, got ${JSON.stringify(v)}`);
  return v as LogFormat;
}

function intIn(o: Origin | undefined, dflt: number, min: number, max: number): number {
  if (!o) return dflt;
  const v = o.value as number;
  if (v < min || v > max) fail(o.label, `must be an integer from ${min} to ${max}, got ${v}`);
  return v;
}

/** `configPath` from --config; undefined = the default path, used only if it exists. */
export function loadSettings(configPath: string | undefined, env: NodeJS.ProcessEnv): DaemonSettings {
  const path = configPath ?? DEFAULT_CONFIG_PATH;
  const obj = readFile(path, configPath !== undefined);
  const file = obj === null ? null : path;
  const fileSet = new Map<Key, Origin>();
  if (obj !== null) fromFile(path, obj, fileSet);
  const envSet = agentEnv(env);
  if (fileSet.has('token') && fileSet.has('tokenFile')) fail(path, 'set token or tokenFile, not both');
  if (fileSet.has('statusToken') && fileSet.has('statusTokenFile')) fail(path, 'set statusToken or statusTokenFile, not both');
  // The token comes from one place: the environment's (TOKEN_FILE first) replaces the file's.
  const envToken = envSet.get('tokenFile') ?? envSet.get('token');
  for (const k of ['token', 'tokenFile'] as const) if (envToken) fileSet.delete(k);
  const envStatus = envSet.get('statusTokenFile') ?? envSet.get('statusToken');
  for (const k of ['statusToken', 'statusTokenFile'] as const) if (envStatus) fileSet.delete(k);
  // The doveadm key likewise: the environment's replaces the file's.
  if (envSet.has('doveadmApiKeyFile') || envSet.has('doveadmApiKey')) for (const k of ['doveadmApiKey', 'doveadmApiKeyFile'] as const) fileSet.delete(k);
  const set = new Map([...fileSet, ...envSet]);
  const where = (k: Key): string => (file ? `${k} must be set in ${file} or as ${envName(k)}` : `${envName(k)} must be set`);

  const workerUrl = set.get('workerUrl') ?? fail(where('workerUrl'), 'wss://<your worker>/agent');
  let tokenOrigin = set.get('tokenFile') ?? set.get('token');
  let tokenIsFile = tokenOrigin !== undefined && tokenOrigin === set.get('tokenFile');
  // Under systemd with LoadCredential=token:<file>, the token when nothing above names one.
  const credential = env.CREDENTIALS_DIRECTORY ? join(env.CREDENTIALS_DIRECTORY, 'token') : null;
  if (!tokenOrigin && credential && existsSync(credential)) {
    tokenOrigin = { value: credential, label: CREDENTIAL, fromFile: false };
    tokenIsFile = true;
  }
  if (!tokenOrigin) {
    const or = 'or a systemd credential named token (LoadCredential=token:<file>)';
    throw new ConfigError(file ? `token: set tokenFile (or token) in ${file}, or MAILBRIDGE_TOKEN_FILE (or MAILBRIDGE_TOKEN), ${or}`
      : `MAILBRIDGE_TOKEN or MAILBRIDGE_TOKEN_FILE must be set (or token/tokenFile in ${path}, ${or})`);
  }
  let token = String(tokenOrigin.value);
  if (tokenIsFile) {
    try {
      token = readFileSync(token, 'utf8').trim();
    } catch (err) {
      fail(tokenOrigin.label, `cannot read ${token}: ${(err as Error).message}`);
    }
  }
  // Blank: the unit's SetCredential=token:\n, which stands in when LoadCredential= finds no file.
  if (token === '' && tokenOrigin.label === CREDENTIAL) fail(CREDENTIAL, `empty: no agent token in ${UNIT_TOKEN_FILE} (the unit's LoadCredential=token:<file>); write it there, root's, mode 0600`);

  // The Worker's read-only STATUS_TOKEN (GET /admin/queue), for the queue's numbers in /metrics.
  const statusOrigin = set.get('statusTokenFile') ?? set.get('statusToken');
  let statusToken: string | null = statusOrigin ? String(statusOrigin.value) : null;
  if (statusOrigin && statusOrigin === set.get('statusTokenFile')) {
    try {
      statusToken = readFileSync(String(statusOrigin.value), 'utf8').trim();
    } catch (err) {
      fail(statusOrigin.label, `cannot read ${String(statusOrigin.value)}: ${(err as Error).message}`);
    }
  }
  let agent: AgentConfig;
  try {
    agent = validateAgent(
      { workerUrl: String(workerUrl.value), token, target: String(set.get('target')?.value ?? DEFAULT_TARGET), statusToken }, set, tokenOrigin);
  } catch (err) {
    // Named where it was set, file or variable.
    if (err instanceof ConfigError && statusOrigin && err.message.startsWith('statusToken: ')) fail(statusOrigin.label, err.message.slice('statusToken: '.length));
    throw err;
  }

  const http = set.get('http');
  return {
    agent,
    logFormat: logFormatOf(set),
    stateDir: String(set.get('stateDir')?.value ?? DEFAULT_STATE_DIR),
    http: http?.value === false ? null : parseListen(http?.label ?? 'http', String(http?.value ?? DEFAULT_HTTP)),
    ...agentExtras(set),
    file,
  };
}
