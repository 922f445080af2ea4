// The whole path on one machine: SMTP ingress -> Worker + Durable Object in
// local workerd -> WebSocket -> edge-agent -> LMTP target. Used by `npm start`
// and by the end-to-end tests.
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { startAgent, type Agent } from '../edge-agent/agent.ts';
import { validateConfig, type AgentConfig } from '../edge-agent/config.ts';
import type { Logger } from '../edge-agent/log.ts';
import { startIngress, type Ingress } from '../lmtp-proxy/ingress.ts';
import { startMaildirTarget, type MaildirTarget } from '../lmtp-proxy/maildir-target.ts';
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
  agent?: Partial<AgentConfig>;
  log: Logger;
}

export interface LocalRelay {
  smtpPort: number;
  workerUrl: URL;
  target: string;
  /** Where the embedded target writes, or null with an external target. */
  maildirRoot: string | null;
  runtime: WorkerRuntime;
  agent: Agent;
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
  try {
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
      onLog: (line) => log('worker', { line }),
    });
    stops.push(() => runtime.dispose());
    const agentUrl = new URL('/agent', runtime.url);
    agentUrl.protocol = 'ws:';
    const cfg = validateConfig({ name: 'local-agent', ...opts.agent, workerUrl: agentUrl.href, token: agentToken, target });
    const agent = startAgent(cfg, join(dataDir, 'agent'), log);
    stops.push(() => agent.stop(10_000));
    await agent.connected;
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
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
