// `npm start`: the local relay. SMTP on 127.0.0.1:2525, mail into ./data/maildir
// (or RELAY_TARGET), everything through the real Worker code in local workerd.
// Settings come from the environment and are checked first (settings.ts): a bad
// one, or a port in use, exits 2 before workerd starts.
import { ConfigError } from '../edge-agent/agent-config.ts';
import { createLogger } from '../edge-agent/ops/log.ts';
import { ADMIN_FILE } from '../protocol/admin-file.ts';
import { PortInUseError, startLocalRelay, type LocalRelay } from './relay.ts';
import { readLocalSettings, type LocalSettings } from './settings.ts';

function fail(msg: string): never {
  process.stderr.write(`mailbridge: ${msg}\n`);
  process.exit(2);
}

function settings(): LocalSettings {
  try {
    return readLocalSettings(process.env);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
}

const s = settings();
const log = createLogger({ format: s.logFormat });

// Installed before the start, so a signal during it stops what has started so far. Miniflare's
// own exit hook would answer SIGINT/SIGTERM with an immediate exit; its listeners are removed
// below (its 'exit' hook still kills workerd whichever way this process ends).
let relay: LocalRelay | null = null;
let stopping = false;
let firstAt = 0;
const shutdown = (why: string) => {
  if (stopping) {
    // Ctrl-C reaches this process twice: from the terminal and forwarded by npm. Only a
    // second press, later, forces the exit.
    if (Date.now() - firstAt < 500) return;
    process.stdout.write(`${why} again: exiting now\n`);
    process.exit(130);
  }
  stopping = true;
  firstAt = Date.now();
  process.stdout.write(`\n${why}: stopping (twice to force)...\n`);
  if (relay === null) return; // still starting: stopped as soon as the start returns
  stop(relay);
};
const stop = (r: LocalRelay) => {
  // Messages not yet acked stay in the queue's storage: nothing is lost by a slow stop being cut.
  const limitMs = s.stopGraceMs + 20_000;
  setTimeout(() => {
    process.stderr.write(`mailbridge: stop took longer than ${limitMs / 1000} s, exiting\n`);
    process.exit(1);
  }, limitMs).unref();
  r.stop().then(() => {
    process.stdout.write('stopped\n');
    process.exit(0);
  }, (err: unknown) => {
    process.stderr.write(`mailbridge: stop failed: ${String(err)}\n`);
    process.exit(1);
  });
};
const listen = () => {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.removeAllListeners(sig);
    process.on(sig, () => shutdown(sig));
  }
};
listen();
// Under npm, npm forwards SIGINT/SIGTERM to this process (the script execs node, so no shell
// sits in between to swallow them). If npm itself is killed outright, this process and
// workerd would be left behind: stop when the parent goes away.
if (process.env.npm_lifecycle_event !== undefined) {
  const parent = process.ppid;
  const watch = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(watch);
    shutdown('npm went away');
  }, 1000).unref();
}

const started = await startLocalRelay({
  dataDir: s.dataDir,
  smtpPort: s.smtpPort,
  target: s.target,
  maxBytes: s.maxBytes,
  vars: s.workerVars,
  agent: s.agent,
  agentOptions: s.agentOptions,
  stopGraceMs: s.stopGraceMs,
  log: (event, fields) => { if (s.verbose || event !== 'worker') log(event, fields); },
}).catch((err: unknown) => {
  if (err instanceof PortInUseError) fail(`SMTP_PORT: ${err.message}`);
  return fail(`could not start: ${String(err)}`);
});
relay = started;
listen(); // again: Miniflare added its listeners during the start
if (stopping) {
  stop(started);
} else {
  process.stdout.write([
    'mailbridge local relay is running',
    `  SMTP ingress   smtp://127.0.0.1:${started.smtpPort}`,
    `  Worker (local) ${started.workerUrl.href}`,
    `  admin API      ${started.workerUrl.href}admin (token in ${s.dataDir}/${ADMIN_FILE}; npm run relayctl -- status)`,
    `  delivering to  ${started.target}${started.maildirRoot ? `  (Maildir under ${started.maildirRoot}/<recipient>/)` : ''}`,
    '  Ctrl-C to stop',
    '',
  ].join('\n'));
}
