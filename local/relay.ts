// The whole path on one machine: SMTP ingress -> Worker + Durable Object in
// local workerd -> WebSocket -> edge-agent -> LMTP target. Used by `npm start`
// and by the end-to-end tests.
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { startAgent, type Agent, type AgentOptions } from '../edge-agent/agent.ts';
import { validateConfig, type AgentConfig } from '../edge-agent/agent-config.ts';
import type { Logger } from '../edge-agent/ops/log.ts';
import { startIngress, type Ingress } from './ingress.ts';
import { startMaildirTarget, type MaildirTarget } from './maildir-target.ts';
import { privateDataDir } from './data-dir.ts';
import { adminToken, writeRunning, writeStopped } from './admin-file.ts';
import { workerHandoff } from './handoff.ts';
import { startWorkerRuntime, type WorkerRuntime } from './worker-runtime.ts';

export interface LocalRelayOptions {
  dataDir: string;
  smtpPort: number;
  /** lmtp://, lmtp+unix: or smtp:// target; unset = the embedded Maildir target. */
  target?: string;
  workerPort?: number;
  maxBytes?: number;
  allowedDomains?: string[];
  /** More Worker vars (VERDICT_WAIT_MS, SHARDS, ...), as wrangler.toml [vars] would set them. */
  vars?: Record<string, string>;
  agent?: Partial<AgentConfig>;
  agentOptions?: AgentOptions;
  /** How long in-flight deliveries may finish at stop (default 10 s). */
  stopGraceMs?: number;
  log: Logger;
}

/** The SMTP port is taken: reported before anything else starts. */
export class PortInUseError extends Error {
  override name = 'PortInUseError';
}

/**
 * Holds `port` until the ingress takes it over, so that a port in use is reported at
 * once and not after workerd has started. 0 (any free port) needs no holding.
 */
async function holdPort(port: number, host: string): Promise<() => Promise<void>> {
  if (port === 0) return () => Promise.resolve();
  const server = createServer();
  await new Promise<void>((ok, fail) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      fail(err.code === 'EADDRINUSE' ? new PortInUseError(`${host}:${port} is already in use (another npm start, or set SMTP_PORT)`) : err);
    });
    server.listen(port, host, () => ok());
  });
  return () => new Promise<void>((ok) => server.close(() => ok()));
}

/**
 * A console line of the Worker as fields of the local log's `worker` event: its JSON event
 * `{"event":"email.accepted",...}` becomes `worker: 'email.accepted'` and the rest as they
 * are (its level is the table's, edge-agent/ops/log.ts); anything else (workerd's own
 * warnings) stays a string, `line`.
 */
export function workerFields(line: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return { line };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v) || typeof (v as { event?: unknown }).event !== 'string') return { line };
  const { event, level: _level, ...rest } = v as Record<string, unknown>;
  return { worker: event, ...rest };
}

export interface LocalRelay {
  smtpPort: number;
  workerUrl: URL;
  target: string;
  /** Where the embedded target writes, or null with an external target. */
  maildirRoot: string | null;
  runtime: WorkerRuntime;
  agent: Agent;
  /** The Worker's ADMIN_TOKEN, also in <dataDir>/admin.json for relayctl. */
  adminToken: string;
  stop(): Promise<void>;
}

export async function startLocalRelay(opts: LocalRelayOptions): Promise<LocalRelay> {
  const dataDir = resolve(opts.dataDir);
  const maxBytes = opts.maxBytes ?? 25 * 1024 * 1024;
  // Local-only secrets, new each start: nothing outside this process needs them.
  const agentToken = randomBytes(24).toString('base64url');
  const devToken = randomBytes(24).toString('base64url');
  const log = opts.log;
  const stops: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch((err: unknown) => log('relay.stop-error', { error: String(err) }));
  };
  const releasePort = await holdPort(opts.smtpPort, '127.0.0.1');
  stops.push(releasePort);
  try {
    privateDataDir(dataDir, log);
    // One per data dir, kept across starts: a relayctl already pointed at it keeps working.
    const admin = adminToken(dataDir);
    let embedded: MaildirTarget | null = null;
    let target = opts.target;
    if (target === undefined) {
      embedded = await startMaildirTarget({ root: join(dataDir, 'maildir'), maxBytes: maxBytes + 64 * 1024 });
      stops.push(() => embedded?.close() ?? Promise.resolve());
      target = embedded.url;
    }
    const runtime = await startWorkerRuntime({
      persistDir: join(dataDir, 'worker'),
      agentTokens: [agentToken],
      devIngressToken: devToken,
      allowedDomains: opts.allowedDomains ?? [],
      maxMessageBytes: maxBytes,
      port: opts.workerPort ?? 0,
      vars: { ...opts.vars, ADMIN_TOKEN: admin },
      onLog: (line) => log('worker', workerFields(line)),
    });
    stops.push(() => runtime.dispose());
    writeRunning(dataDir, runtime.url, admin);
    stops.push(() => Promise.resolve(writeStopped(dataDir, admin)));
    const agentUrl = new URL('/agent', runtime.url);
    agentUrl.protocol = 'ws:';
    const cfg = validateConfig({ name: 'local-agent', ...opts.agent, workerUrl: agentUrl.href, token: agentToken, target });
    const agent = startAgent(cfg, join(dataDir, 'agent'), log, opts.agentOptions);
    stops.push(() => agent.stop(opts.stopGraceMs ?? 10_000));
    await agent.connected;
    await releasePort();
    const ingress: Ingress = await startIngress({
      port: opts.smtpPort,
      spoolDir: join(dataDir, 'spool'),
      maxBytes,
      handoff: workerHandoff(runtime.url, devToken),
      log,
    });
    stops.push(() => ingress.close());
    return {
      smtpPort: ingress.port,
      get workerUrl() { return runtime.url; },
      target,
      maildirRoot: embedded ? embedded.root : null,
      runtime,
      agent,
      adminToken: admin,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
