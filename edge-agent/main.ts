// The edge-agent daemon: `node edge-agent/main.ts [--config <file>]`; deployed as one JS file
// (edge-agent/build.ts → dist/edge-agent.mjs, run by `npm run agent` and the systemd unit).
// Settings: the JSON file (default /etc/mailbridge/agent.json, skipped if absent)
// with MAILBRIDGE_* environment overrides (settings.ts). A bad setting exits with
// code 2 and a message naming it. SIGTERM/SIGINT stop it gracefully, exit 0.
import { parseArgs } from 'node:util';
import type { Agent } from './agent.ts';
import { ConfigError } from './config.ts';
import type { HttpServer } from './http.ts';
import { createLogger, onJournal } from './log.ts';
import { reclaiming } from './reclaim.ts';
import { loadSettings, type DaemonSettings } from './settings.ts';

function fail(msg: string): never {
  // The agent cannot work (a bad setting, a journal it cannot open): an error, <3> under journald.
  process.stderr.write(`${onJournal(process.env, 2) ? '<3>' : ''}mailbridge-agent: ${msg}\n`);
  process.exit(2);
}

function settings(): DaemonSettings {
  try {
    const { values } = parseArgs({ options: { config: { type: 'string' } }, strict: true, allowPositionals: false });
    return loadSettings(values.config, process.env);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    // parseArgs: an unknown option or a missing value.
    if (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS')) fail(`${err.message} (usage: main.ts [--config <file>])`);
    throw err;
  }
}

const s = settings();
// Loaded after the settings are known good: a bad setting answers at once.
const { startAgent } = await import('./agent.ts');
const { startHttpServer } = await import('./http.ts');
const { DAY_MS } = await import('./journal.ts');
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
  name: s.agent.name, target: s.agent.target, stateDir: s.stateDir, config: s.file ?? 'environment',
  concurrency: s.agent.concurrency, reclaim: reclaiming,
  recipients: s.agent.recipientsFile ?? 'none', bounceRelay: s.agent.bounceRelay ?? 'off', http: s.http ? `${s.http.host}:${s.http.port}` : 'off',
});

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
    setTimeout(() => {
      log('agent.stop-timeout', {});
      process.exit(1);
    }, s.stopGraceMs + 20_000).unref();
    // In-flight deliveries get stopGraceMs to finish; the rest is nacked (shutdown) and redelivered.
    agent.stop(s.stopGraceMs)
      .then(() => http?.close())
      .then(() => process.exit(0), (err: unknown) => {
        process.stderr.write(`mailbridge-agent: stop failed: ${String(err)}\n`);
        process.exit(1);
      });
  });
}
