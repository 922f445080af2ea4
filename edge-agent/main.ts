// The edge-agent daemon: `mailbridge-agent [--config <file>]`, deployed as one executable
// (edge-agent/package/build.ts → dist/mailbridge-agent; `node edge-agent/main.ts` runs the source).
// Settings: the JSON file (default /etc/mailbridge/agent.json, skipped if absent)
// with MAILBRIDGE_* environment overrides (daemon-settings.ts). A bad setting or usage exits with
// code 2 and a message naming it. SIGTERM/SIGINT stop it gracefully, exit 0.
// --help and --version answer and exit 0; --healthcheck <url> is the container's probe.
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { PROTOCOL_VERSION } from '../protocol/wire.ts';
import type { Agent } from './agent.ts';
import { ConfigError } from './agent-config.ts';
import type { HttpServer } from './ops/http.ts';
import { createLogger, onJournal } from './ops/log.ts';
import { systemdNotifier } from './ops/notify.ts';
import { reclaiming } from './session/reclaim.ts';
import { DEFAULT_CONFIG_PATH, DEFAULT_HTTP, envName, loadSettings, SETTING_KEYS, type DaemonSettings } from './daemon-settings.ts';

// package.json's version: written in by build.ts, read from the file when main.ts runs from source.
declare const MAILBRIDGE_VERSION: string | undefined;
const VERSION = typeof MAILBRIDGE_VERSION === 'string' ? MAILBRIDGE_VERSION
  : (createRequire(import.meta.url)('../package.json') as { version: string }).version;

const USAGE_LINE = 'usage: mailbridge-agent [--config <file>] | --help | --version | --healthcheck <url>';

function usage(): string {
  const keys = SETTING_KEYS.map((k) => `  ${k.padEnd(22)}${envName(k)}`).join('\n');
  return `mailbridge-agent ${VERSION}: relays mail queued at the mailbridge Worker to a local LMTP server.

${USAGE_LINE}

Settings come from a JSON file (--config <file>; default ${DEFAULT_CONFIG_PATH}, skipped if
absent) whose keys the MAILBRIDGE_* environment variables override one by one:
  key                   variable
${keys}
Required: workerUrl (wss://<your worker>/agent) and the agent token, as MAILBRIDGE_TOKEN_FILE
or MAILBRIDGE_TOKEN, tokenFile or token in the JSON file, or a systemd credential named
token (LoadCredential=token:/etc/mailbridge/agent.token). Defaults: target
lmtp+unix:/var/run/dovecot/lmtp, stateDir /var/lib/mailbridge, http ${DEFAULT_HTTP}
(GET /healthz and /metrics).

  --config <file>      the JSON settings file
  --healthcheck <url>  GET <url> (e.g. http://127.0.0.1:8025/healthz); exit 0 on 200, else 1
  --help, --version    this text; the version and the wire protocol version

Logs are JSON lines on stdout. Exit codes: 0 stopped by SIGTERM/SIGINT, 1 failed,
2 a bad setting or usage. Docs: docs/operations.md (in the release tarball as
operations.md), section 3 "Install the agent on the home server".
`;
}

function fail(msg: string): never {
  // The agent cannot work (a bad setting, a journal it cannot open): an error, <3> under journald.
  process.stderr.write(`${onJournal(process.env, 2) ? '<3>' : ''}mailbridge-agent: ${msg}\n`);
  process.exit(2);
}

type Command = { run: 'agent'; settings: DaemonSettings } | { run: 'healthcheck'; url: string };

function command(): Command {
  try {
    const { values } = parseArgs({
      options: { config: { type: 'string' }, help: { type: 'boolean' }, version: { type: 'boolean' }, healthcheck: { type: 'string' } },
      strict: true, allowPositionals: false,
    });
    if (values.help) {
      process.stdout.write(usage());
      process.exit(0);
    }
    if (values.version) {
      process.stdout.write(`mailbridge-agent ${VERSION} (protocol ${PROTOCOL_VERSION}, node ${process.version})\n`);
      process.exit(0);
    }
    if (values.healthcheck !== undefined) return { run: 'healthcheck', url: values.healthcheck };
    return { run: 'agent', settings: loadSettings(values.config, process.env) };
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    // parseArgs: an unknown option or a missing value.
    if (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS')) fail(`${err.message} (${USAGE_LINE})`);
    throw err;
  }
}

/** The container's HEALTHCHECK: no curl in the image, so the agent asks itself. */
async function healthcheck(url: string): Promise<never> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    process.stdout.write(await res.text());
    process.exit(res.status === 200 ? 0 : 1);
  } catch (err) {
    process.stderr.write(`mailbridge-agent: healthcheck ${url}: ${(err as Error).message}\n`);
    process.exit(1);
  }
}

async function run(s: DaemonSettings): Promise<void> {
  // Loaded after the settings are known good: a bad setting answers at once.
  const { startAgent } = await import('./agent.ts');
  const { startHttpServer } = await import('./ops/http.ts');
  const { DAY_MS } = await import('./delivery/journal.ts');
  const log = createLogger({ format: s.logFormat });
  let agent: Agent;
  try {
    agent = startAgent(s.agent, s.stateDir, log, {
      journalRetentionMs: s.journalRetentionDays * DAY_MS,
      logSubject: s.logSubject,
    });
  } catch (err) {
    fail(`cannot start: ${(err as Error).message}`);
  }
  log('agent.started', {
    version: VERSION, name: s.agent.name, target: s.agent.target, stateDir: s.stateDir, config: s.file ?? 'environment',
    concurrency: s.agent.concurrency, reclaim: reclaiming,
    recipients: s.agent.recipientsFile ?? 'none', bounceRelay: s.agent.bounceRelay ?? 'off', http: s.http ? `${s.http.host}:${s.http.port}` : 'off',
    doveadm: s.agent.doveadmUrl ?? 'off',
  });
  // Ready once the settings are good and the journal is open, not once the Worker answers:
  // an unreachable Cloudflare must not hold up boot (the agent keeps reconnecting by itself).
  const notify = systemdNotifier(process.env, log);
  notify.ready();

  // Monitoring is secondary to mail: if the port is taken, say so and keep delivering.
  let http: HttpServer | null = null;
  if (s.http) {
    startHttpServer(s.http, { health: () => agent.health(), metrics: () => agent.metrics.render(), refresh: () => agent.metrics.refresh() }, log).then(
      (h) => { http = h; },
      (err: unknown) => log('http.failed', { host: s.http?.host, port: s.http?.port, error: (err as Error).message }),
    );
  }

  let stopping = false;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (stopping) process.exit(130);
      stopping = true;
      log('agent.stopping', { signal: sig, graceMs: s.stopGraceMs });
      // Belt and braces: every step of stop() is bounded, but exit even if one is not.
      const limitMs = s.stopGraceMs + 20_000;
      notify.stopping(limitMs);
      notify.close();
      setTimeout(() => {
        log('agent.stop-timeout', {});
        process.exit(1);
      }, limitMs).unref();
      // In-flight deliveries get stopGraceMs to finish; the rest is nacked (shutdown) and redelivered.
      agent.stop(s.stopGraceMs)
        .then(() => http?.close())
        .then(() => process.exit(0), (err: unknown) => {
          process.stderr.write(`mailbridge-agent: stop failed: ${String(err)}\n`);
          process.exit(1);
        });
    });
  }
}

const cmd = command();
// No top-level await: the executable's main script is CommonJS (build.ts).
void (cmd.run === 'healthcheck' ? healthcheck(cmd.url) : run(cmd.settings));
