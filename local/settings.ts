// `npm start`'s settings, read from its environment and checked before anything
// starts, with the parsers production uses: the Worker's vars by
// bridge-worker/config.ts parseConfig, the agent's MAILBRIDGE_* by edge-agent/daemon-settings.ts.
// A malformed or unknown setting is a ConfigError naming the variable (main.ts: exit 2).
//
// What counts as unknown: every MAILBRIDGE_* variable no agent setting knows (the
// prefix is ours), and any variable whose name is a near miss of a name we read
// (RETRY_FIRTS_MS, SHARD, LOG_LEVLE): within 1 edit of a name shorter than 10
// characters, 2 edits of a longer one (a swap of two neighbours counts as one
// edit). Other variables (PATH, HOME, npm's own) are none of our business.
import { parseConfig, SECRET_NAMES, VAR_NAMES, WorkerConfigError, type Vars } from '../bridge-worker/config.ts';
import type { AgentOptions } from '../edge-agent/agent.ts';
import { ConfigError, type AgentConfig } from '../edge-agent/agent-config.ts';
import { DAY_MS } from '../edge-agent/delivery/journal.ts';
import { agentEnv, agentExtras, logFormatOf, validateAgent, type Key } from '../edge-agent/daemon-settings.ts';
import type { LogFormat } from '../edge-agent/ops/log.ts';
import { parseTarget } from '../lmtp-proxy/target.ts';

/** Read by npm start alone (LOG_LEVEL is also passed on to the Worker). */
export const LOCAL_NAMES = ['SMTP_PORT', 'DATA_DIR', 'RELAY_TARGET'] as const;

/** Agent settings npm start decides itself, and what to use instead. */
const NOT_HERE: Partial<Record<Key, string>> = {
  workerUrl: 'npm start connects its agent to its own Worker',
  token: 'npm start makes its own agent token',
  tokenFile: 'npm start makes its own agent token',
  target: 'use RELAY_TARGET',
  stateDir: 'the agent keeps its state under DATA_DIR/agent',
  http: 'npm start runs no /healthz or /metrics server',
  statusToken: 'npm start runs no /metrics server',
  statusTokenFile: 'npm start runs no /metrics server',
};

export interface LocalSettings {
  smtpPort: number;
  dataDir: string;
  /** RELAY_TARGET; unset = the embedded Maildir target. */
  target: string | undefined;
  /** LOG_LEVEL=debug: print the Worker's events too. */
  verbose: boolean;
  /** MAILBRIDGE_LOG_FORMAT: json (default) or maillog, as for the agent. */
  logFormat: LogFormat;
  /** The Worker's vars as set in the environment, for Miniflare's bindings. */
  workerVars: Record<string, string>;
  /** MAX_MESSAGE_BYTES as the Worker reads it: the ingress uses the same limit. */
  maxBytes: number;
  agent: Omit<AgentConfig, 'workerUrl' | 'token' | 'target'>;
  agentOptions: AgentOptions;
  /** How long in-flight deliveries may finish at stop (MAILBRIDGE_STOP_GRACE_MS; 10 s here). */
  stopGraceMs: number;
}

const fail = (name: string, msg: string): never => { throw new ConfigError(`${name}: ${msg}`); };

/** Optimal string alignment distance: insertions, deletions, substitutions, swaps of neighbours. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  const at = (i: number, j: number): number => d[i]?.[j] ?? 0;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, at(i - 2, j - 2) + 1);
      (d[i] ?? [])[j] = v;
    }
  }
  return at(a.length, b.length);
}

/** The name `name` looks like a misspelling of, or null. */
export function nearMiss(name: string, known: readonly string[]): string | null {
  if (known.includes(name)) return null;
  for (const k of known) {
    if (editDistance(name, k) <= (k.length < 10 ? 1 : 2)) return k;
  }
  return null;
}

export function readLocalSettings(env: NodeJS.ProcessEnv): LocalSettings {
  const ours: readonly string[] = [...LOCAL_NAMES, ...VAR_NAMES, ...SECRET_NAMES];
  for (const name of Object.keys(env).sort()) {
    const like = nearMiss(name, ours);
    if (like !== null) fail(name, `unknown variable; did you mean ${like}? (unset it if it is not meant for mailbridge)`);
  }
  for (const name of SECRET_NAMES) {
    if (env[name] !== undefined) fail(name, 'npm start makes its own; unset it (relayctl finds the admin token in DATA_DIR/admin.json)');
  }

  const portText = env.SMTP_PORT ?? '2525';
  const smtpPort = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(smtpPort <= 65535)) fail('SMTP_PORT', `not a port: ${JSON.stringify(portText)}`);
  const dataDir = env.DATA_DIR === undefined || env.DATA_DIR === '' ? 'data' : env.DATA_DIR;
  const target = env.RELAY_TARGET === undefined || env.RELAY_TARGET === '' ? undefined : env.RELAY_TARGET;
  if (target !== undefined) {
    try {
      parseTarget(target);
    } catch (err) {
      fail('RELAY_TARGET', (err as Error).message);
    }
  }

  const workerVars: Record<string, string> = {};
  for (const name of VAR_NAMES) {
    const v = env[name];
    if (v !== undefined) workerVars[name] = v;
  }
  let worker;
  try {
    worker = parseConfig(workerVars satisfies Vars);
  } catch (err) {
    // Its message already starts with the variable's name.
    if (err instanceof WorkerConfigError) throw new ConfigError(err.message);
    throw err;
  }

  const set = agentEnv(env);
  for (const [key, origin] of set) {
    const why = NOT_HERE[key];
    if (why !== undefined) fail(origin.label, `does not apply to npm start (${why})`);
  }
  const shards = set.get('shards');
  if (shards && shards.value !== worker.shards) fail(shards.label, `must equal the Worker's SHARDS (${worker.shards}); or leave it unset to follow SHARDS`);
  // The URL, token and target are npm start's own, filled in by relay.ts; these stand-ins let
  // the agent's settings be checked now, before workerd starts.
  const cfg = validateAgent({ workerUrl: 'ws://127.0.0.1/agent', token: 'x'.repeat(16), target: 'lmtp://127.0.0.1:24', name: 'local-agent', shards: worker.shards }, set);
  // The stand-in target above is LMTP; the doveadm check is for a Dovecot target only (edge-agent/agent-config.ts).
  const doveadm = set.get('doveadmUrl');
  if (doveadm && target !== undefined && parseTarget(target).protocol !== 'lmtp') fail(doveadm.label, `only for an LMTP target (Dovecot), not RELAY_TARGET ${target}`);
  const extras = agentExtras(set);
  const { workerUrl: _url, token: _token, target: _target, ...agent } = cfg;
  return {
    smtpPort, dataDir, target, verbose: worker.logLevel === 'debug', logFormat: logFormatOf(set), workerVars, maxBytes: worker.maxMessageBytes, agent,
    agentOptions: { logSubject: extras.logSubject, journalRetentionMs: extras.journalRetentionDays * DAY_MS },
    stopGraceMs: set.has('stopGraceMs') ? extras.stopGraceMs : 10_000,
  };
}
