// `npm start`: the local relay. SMTP on 127.0.0.1:2525, mail into ./data/maildir
// (or RELAY_TARGET), everything through the real Worker code in local workerd.
import { jsonLogger } from '../edge-agent/log.ts';
import { parseTarget } from '../lmtp-proxy/target.ts';
import { startLocalRelay } from './relay.ts';

function fail(msg: string): never {
  process.stderr.write(`mailbridge: ${msg}\n`);
  process.exit(2);
}

const env = process.env;
const smtpPort = Number(env.SMTP_PORT ?? '2525');
if (!Number.isInteger(smtpPort) || smtpPort < 0 || smtpPort > 65535) fail(`SMTP_PORT: not a port: ${env.SMTP_PORT}`);
const target = env.RELAY_TARGET && env.RELAY_TARGET !== '' ? env.RELAY_TARGET : undefined;
if (target !== undefined) {
  try {
    parseTarget(target);
  } catch (err) {
    fail(`RELAY_TARGET: ${(err as Error).message}`);
  }
}
const verbose = env.LOG_LEVEL === 'debug';
const log = jsonLogger();
const relay = await startLocalRelay({
  dataDir: env.DATA_DIR ?? 'data',
  smtpPort,
  target,
  allowedDomains: (env.ALLOWED_DOMAINS ?? '').split(',').filter((d) => d !== ''),
  log: (event, fields) => { if (verbose || event !== 'worker') log(event, fields); },
}).catch((err: unknown) => fail(`could not start: ${String(err)}`));

process.stdout.write([
  'mailbridge local relay is running',
  `  SMTP ingress   smtp://127.0.0.1:${relay.smtpPort}`,
  `  Worker (local) ${relay.workerUrl.href}`,
  `  delivering to  ${relay.target}${relay.maildirRoot ? `  (Maildir under ${relay.maildirRoot}/<recipient>/)` : ''}`,
  '  Ctrl-C to stop',
  '',
].join('\n'));

let stopping = false;
const shutdown = (sig: NodeJS.Signals) => {
  if (stopping) {
    process.stdout.write(`${sig} again: exiting now\n`);
    process.exit(130);
  }
  stopping = true;
  process.stdout.write(`\n${sig}: stopping (twice to force)...\n`);
  // Messages not yet acked stay in the queue's storage: nothing is lost by a slow stop being cut.
  setTimeout(() => {
    process.stderr.write('mailbridge: stop took longer than 30 s, exiting\n');
    process.exit(1);
  }, 30_000).unref();
  relay.stop().then(() => {
    process.stdout.write('stopped\n');
    process.exit(0);
  }, (err: unknown) => {
    process.stderr.write(`mailbridge: stop failed: ${String(err)}\n`);
    process.exit(1);
  });
};
// Miniflare's exit hook answers SIGINT/SIGTERM with an immediate exit; stop in order
// instead (its 'exit' hook still kills workerd whichever way this process ends).
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.removeAllListeners(sig);
  process.on(sig, () => shutdown(sig));
}
