// The edge-agent daemon: `npm run agent` or `node edge-agent/main.ts`.
// Configured from the environment (a config file comes with issue #5); a bad value
// exits with code 2 and a message naming it. SIGTERM/SIGINT stop it gracefully.
import { readFileSync } from 'node:fs';
import { startAgent } from './agent.ts';
import { ConfigError, validateConfig, type AgentConfig } from './config.ts';
import { jsonLogger } from './log.ts';

const ENV = 'MAILBRIDGE_';

function fail(msg: string): never {
  process.stderr.write(`mailbridge-agent: ${msg}\n`);
  process.exit(2);
}

function int(name: string): number | undefined {
  const v = process.env[ENV + name];
  if (v === undefined || v === '') return undefined;
  if (!/^[0-9]+$/.test(v)) fail(`${ENV}${name}: not a whole number: ${JSON.stringify(v)}`);
  return Number(v);
}

function token(): string {
  const file = process.env[`${ENV}TOKEN_FILE`];
  if (file) {
    try {
      return readFileSync(file, 'utf8').trim();
    } catch (err) {
      fail(`${ENV}TOKEN_FILE: cannot read ${file}: ${(err as Error).message}`);
    }
  }
  return process.env[`${ENV}TOKEN`] ?? fail(`${ENV}TOKEN or ${ENV}TOKEN_FILE must be set`);
}

function config(): AgentConfig {
  const e = process.env;
  const input: Parameters<typeof validateConfig>[0] = {
    workerUrl: e[`${ENV}WORKER_URL`] ?? fail(`${ENV}WORKER_URL must be set (wss://<your worker>/agent)`),
    token: token(),
    target: e[`${ENV}TARGET`] || 'lmtp+unix:/var/run/dovecot/lmtp',
  };
  if (e[`${ENV}NAME`]) input.name = e[`${ENV}NAME`];
  const concurrency = int('CONCURRENCY');
  if (concurrency !== undefined) input.concurrency = concurrency;
  const heartbeatMs = int('HEARTBEAT_MS');
  if (heartbeatMs !== undefined) input.heartbeatMs = heartbeatMs;
  try {
    return validateConfig(input);
  } catch (err) {
    // 'workerUrl: ...' -> 'MAILBRIDGE_WORKER_URL: ...', the name the user set.
    if (err instanceof ConfigError) fail(err.message.replace(/^(\w+):/, (_, k: string) => `${ENV}${k.replace(/[A-Z]/g, '_$&').toUpperCase()}:`));
    throw err;
  }
}

const cfg = config();
const stateDir = process.env[`${ENV}STATE_DIR`] || '/var/lib/mailbridge';
const log = jsonLogger();
let agent;
try {
  agent = startAgent(cfg, stateDir, log);
} catch (err) {
  fail(`cannot start: ${(err as Error).message}`);
}
log('agent.started', { name: cfg.name, target: cfg.target, stateDir });

let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (stopping) process.exit(130);
    stopping = true;
    log('agent.stopping', { signal: sig });
    // In-flight deliveries get 20 s to finish; the rest is nacked or released and redelivered.
    agent.stop(20_000).then(() => process.exit(0), (err: unknown) => {
      process.stderr.write(`mailbridge-agent: stop failed: ${String(err)}\n`);
      process.exit(1);
    });
  });
}
