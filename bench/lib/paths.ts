// The four paths under test, each started once per bench run against the same Dovecot:
//   direct-lmtp  the bench's LmtpClient straight into Dovecot's LMTP listener
//   relay        SMTP ingress -> Worker + Durable Object (workerd) -> WebSocket -> edge-agent -> LMTP
//   postfix      a private Postfix: smtpd -> queue -> lmtp client -> Dovecot
//   http-api     seed 002's design (bench/baselines/http-api): ingress -> Worker (TextDecoder,
//                JSON) -> HTTP API -> LMTP
// Each exposes the target the load generator talks to and the process trees whose CPU
// and memory are measured.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENT_NODE_FLAGS, buildAgent } from '../../edge-agent/package/build.ts';
import { parseTarget, type Target } from '../../lmtp-proxy/target.ts';
import { freePort, startPostfix, type PostfixInstance } from './postfix.ts';
import { childrenNamed, NODE, NODE_FLAGS, spawnChild, type Child } from './proc.ts';

export const PATHS = ['direct-lmtp', 'relay', 'postfix', 'http-api'] as const;
export type PathName = (typeof PATHS)[number];

export const MAX_BYTES = 25 * 1024 * 1024;

export interface PathUnderTest {
  name: PathName;
  target: Target;
  /** Named process trees measured for CPU (roots; descendants are included). */
  procs(): Record<string, number[]>;
  stop(): Promise<void>;
}

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const AGENT_MAIN = here('../../edge-agent/main.ts');
const RELAY_EDGE = here('../procs/relay-edge.ts');
const HTTP_EDGE = here('../baselines/http-api/edge.ts');
const HTTP_API = here('../baselines/http-api/api.ts');

const readyLine = (l: string): boolean => l.startsWith('{"ready":true');

export function directPath(lmtpPort: number): PathUnderTest {
  return { name: 'direct-lmtp', target: parseTarget(`lmtp://127.0.0.1:${lmtpPort}`), procs: () => ({}), stop: async () => {} };
}

export interface AgentOptions {
  /** Write a V8 CPU profile of the agent into this directory (written when it exits). */
  cpuProfDir?: string;
  concurrency?: number;
  /**
   * Run edge-agent/main.ts through Node's type stripping (as the tests do) instead of the
   * agent as deployed: dist/edge-agent.mjs from edge-agent/package/build.ts, with AGENT_NODE_FLAGS.
   */
  source?: boolean;
  creditBytes?: number;
  /** Run the agent on these CPUs only (taskset list, e.g. '1'). */
  cpus?: string;
  /** Node flags added to the deployed ones (AGENT_NODE_FLAGS), to measure a V8 setting. */
  nodeFlags?: string[];
  /** Environment added to the agent's (e.g. glibc malloc settings), to measure one. */
  env?: Record<string, string>;
  /** Another build of the agent (buildAgent(file)) run instead of this tree's, to compare two. */
  bundle?: string;
}

export interface RelayPath extends PathUnderTest {
  /** Stops the ingress/workerd process (SIGTERM: its --cpu-prof profile is written). */
  edgeStop(): Promise<void>;
  workerUrl: URL;
  devToken: string;
  agentPid(): number | null;
  workerdPid(): number | null;
  edgePid: number;
  /** Starts the agent process (if not running) and resolves once its session is up. */
  startAgent(opts?: AgentOptions): Promise<{ spawnedAt: number; readyAt: number }>;
  stopAgent(): Promise<void>;
  /** Queue counts by state, from the Durable Object. */
  summary(): Promise<Record<string, number>>;
  agentLines(fn: (line: string) => void): void;
}

export interface RelayOptions {
  /** --cpu-prof for the ingress process (written when it exits). */
  edgeProfDir?: string;
  /** workerd's V8 inspector on this port (see lib/workerd-inspect.ts). */
  inspectPort?: number;
  verdictWaitMs?: number;
  /** Options of the agent started with the relay (and of every restart without options). */
  agent?: AgentOptions;
}

export async function startRelay(lmtpPort: number, opts: RelayOptions = {}): Promise<RelayPath> {
  const defaults = opts.agent ?? {};
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-bench-relay-'));
  const bundle = await buildAgent();
  const agentToken = randomBytes(24).toString('base64url');
  const devToken = randomBytes(24).toString('base64url');
  const flags = [...NODE_FLAGS, ...(opts.edgeProfDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.edgeProfDir}`] : [])];
  const edge = spawnChild(NODE, [...flags, RELAY_EDGE], {
    BENCH_DIR: dir, BENCH_AGENT_TOKEN: agentToken, BENCH_DEV_TOKEN: devToken, BENCH_MAX_BYTES: String(MAX_BYTES),
    ...(opts.verdictWaitMs !== undefined ? { BENCH_VERDICT_WAIT_MS: String(opts.verdictWaitMs) } : {}),
    ...(opts.inspectPort !== undefined ? { BENCH_WORKERD_INSPECT_PORT: String(opts.inspectPort) } : {}),
  });
  const ready = JSON.parse(await edge.waitLine(readyLine, 60_000, 'ready line from the relay edge')) as { smtpPort: number; workerUrl: string };
  const workerUrl = new URL(ready.workerUrl);
  const agentUrl = new URL('/agent', workerUrl);
  agentUrl.protocol = 'ws:';
  let agent: Child | null = null;
  const lineFns = new Set<(line: string) => void>();

  const startAgent = async (o: AgentOptions = {}): Promise<{ spawnedAt: number; readyAt: number }> => {
    if (agent) throw new Error('agent already running');
    const spawnedAt = performance.now();
    const profDir = o.cpuProfDir ?? defaults.cpuProfDir;
    const aflags = [...NODE_FLAGS, ...(profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [])];
    const extra = o.nodeFlags ?? defaults.nodeFlags ?? [];
    const entry = o.source ?? defaults.source ? [...extra, AGENT_MAIN] : [...AGENT_NODE_FLAGS, ...extra, o.bundle ?? defaults.bundle ?? bundle];
    // taskset execs node: the pid stays the agent's.
    const cpus = o.cpus ?? defaults.cpus;
    const a = spawnChild(cpus ? 'taskset' : NODE, [...(cpus ? ['-c', cpus, NODE] : []), ...aflags, ...entry], {
      MAILBRIDGE_WORKER_URL: agentUrl.href,
      MAILBRIDGE_TOKEN: agentToken,
      MAILBRIDGE_TARGET: `lmtp://127.0.0.1:${lmtpPort}`,
      MAILBRIDGE_STATE_DIR: join(dir, 'agent'),
      MAILBRIDGE_NAME: 'bench-agent',
      // The agent's /healthz + /metrics listener (default 127.0.0.1:8025) on a free port,
      // so that it cannot collide with another agent on this machine.
      MAILBRIDGE_HTTP: `127.0.0.1:${await freePort()}`,
      ...(o.concurrency ?? defaults.concurrency ? { MAILBRIDGE_CONCURRENCY: String(o.concurrency ?? defaults.concurrency) } : {}),
      ...(o.creditBytes ?? defaults.creditBytes ? { MAILBRIDGE_CREDIT_BYTES: String(o.creditBytes ?? defaults.creditBytes) } : {}),
      ...(o.env ?? defaults.env ?? {}),
    });
    for (const fn of lineFns) a.onLine(fn);
    agent = a;
    await a.waitLine((l) => l.includes('"session.ready"'), 30_000, 'session.ready from the agent');
    return { spawnedAt, readyAt: performance.now() };
  };
  const stopAgent = async (): Promise<void> => {
    const a = agent;
    agent = null;
    if (!a) return;
    await a.stop('SIGTERM', 30_000);
    const code = await a.exited;
    if (code !== 0) throw new Error(`agent exited with ${code}: ${a.stderr().slice(-2000)}`);
  };
  let asked = 0;
  const summary = async (): Promise<Record<string, number>> => {
    const seq = ++asked;
    const p = edge.waitLine((l) => l.startsWith('{"summary"') && (JSON.parse(l) as { seq?: unknown }).seq === seq, 30_000, 'summary');
    edge.proc.stdin?.write(`summary ${seq}\n`);
    const s = JSON.parse(await p) as { summary: Record<string, number> | null; error?: string };
    if (!s.summary) throw new Error(`summary failed: ${s.error ?? ''}`);
    return s.summary;
  };
  await startAgent();
  return {
    name: 'relay',
    edgeStop: () => edge.stop('SIGTERM', 20_000),
    target: parseTarget(`smtp://127.0.0.1:${ready.smtpPort}`),
    workerUrl, devToken, edgePid: edge.pid,
    agentPid: () => agent?.pid ?? null,
    workerdPid: () => childrenNamed(edge.pid, 'workerd')[0] ?? null,
    procs: () => ({ agent: agent ? [agent.pid] : [], 'ingress (node)': [edge.pid], workerd: childrenNamed(edge.pid, 'workerd') }),
    startAgent, stopAgent, summary,
    agentLines: (fn) => { lineFns.add(fn); },
    async stop() {
      await stopAgent().catch(() => undefined);
      await edge.stop('SIGTERM', 20_000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface HttpApiPath extends PathUnderTest {
  apiPid: number;
  workerdPid(): number | null;
  edgePid: number;
}

export async function startHttpApi(lmtpPort: number): Promise<HttpApiPath> {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-bench-httpapi-'));
  const apiKey = randomBytes(48).toString('base64');
  const devToken = randomBytes(24).toString('base64url');
  const api = spawnChild(NODE, [...NODE_FLAGS, HTTP_API], { BENCH_API_KEY: apiKey, BENCH_LMTP: `lmtp://127.0.0.1:${lmtpPort}` });
  const { port } = JSON.parse(await api.waitLine(readyLine, 30_000, 'ready line from the API')) as { port: number };
  const edge = spawnChild(NODE, [...NODE_FLAGS, HTTP_EDGE], {
    BENCH_DIR: dir, BENCH_DEV_TOKEN: devToken, BENCH_API_KEY: apiKey, BENCH_MAX_BYTES: String(MAX_BYTES),
    BENCH_API_URL: `http://127.0.0.1:${port}/api/v1/inbound-mail`,
  });
  const ready = JSON.parse(await edge.waitLine(readyLine, 60_000, 'ready line from the baseline edge')) as { smtpPort: number };
  return {
    name: 'http-api',
    target: parseTarget(`smtp://127.0.0.1:${ready.smtpPort}`),
    apiPid: api.pid, edgePid: edge.pid,
    workerdPid: () => childrenNamed(edge.pid, 'workerd')[0] ?? null,
    procs: () => ({ api: [api.pid], 'ingress (node)': [edge.pid], workerd: childrenNamed(edge.pid, 'workerd') }),
    async stop() {
      await edge.stop('SIGTERM', 20_000);
      await api.stop('SIGTERM', 10_000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface PostfixPath extends PathUnderTest {
  instance: PostfixInstance;
}

export async function startPostfixPath(lmtpPort: number): Promise<PostfixPath> {
  const instance = await startPostfix(lmtpPort);
  return {
    name: 'postfix',
    target: parseTarget(`smtp://127.0.0.1:${instance.smtpPort}`),
    instance,
    procs: () => ({ postfix: [instance.masterPid] }),
    stop: () => instance.stop(),
  };
}
