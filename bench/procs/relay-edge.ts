// Child process: the Cloudflare side of the relay on one machine, as startLocalRelay()
// builds it (local/relay.ts) but without the agent, which the bench runs as its own
// process (edge-agent/main.ts) to measure it: the Worker and its Durable Object in
// workerd (startWorkerRuntime) and the SMTP ingress standing in for Email Routing,
// handing each message to the Worker's /dev/email route (workerHandoff).
//
// One difference from startLocalRelay: maxClients is raised from smtp-server's 20
// (what startIngress uses unless told) so that 32 concurrent senders are not refused;
// Email Routing has no such limit.
//
// Env: BENCH_DIR, BENCH_AGENT_TOKEN, BENCH_DEV_TOKEN, BENCH_MAX_BYTES, optional
// BENCH_VERDICT_WAIT_MS (the Worker's VERDICT_WAIT_MS; unset = its default),
// BENCH_WORKERD_INSPECT_PORT (profiling: workerd's V8 inspector on that port).
// Prints one JSON line {"ready":true,smtpPort,workerUrl} on stdout; "summary <n>" on stdin
// answers {"summary":{...},"seq":n}. SIGTERM stops it.
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { startIngress } from '../../local/ingress.ts';
import { workerHandoff } from '../../local/handoff.ts';
import { startWorkerRuntime } from '../../local/worker-runtime.ts';
import { inspectorWrapper } from '../lib/workerd-inspect.ts';

const env = (k: string): string => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} must be set`);
  return v;
};
const dir = env('BENCH_DIR');
const maxBytes = Number(env('BENCH_MAX_BYTES'));
// For the profiling pass only: workerd with its V8 inspector on this port.
if (process.env.BENCH_WORKERD_INSPECT_PORT) {
  process.env.MINIFLARE_WORKERD_PATH = await inspectorWrapper(dir, Number(process.env.BENCH_WORKERD_INSPECT_PORT));
}

const runtime = await startWorkerRuntime({
  persistDir: join(dir, 'worker'),
  agentTokens: [env('BENCH_AGENT_TOKEN')],
  devIngressToken: env('BENCH_DEV_TOKEN'),
  allowedDomains: [],
  maxMessageBytes: maxBytes,
  ...(process.env.BENCH_VERDICT_WAIT_MS ? { verdictWaitMs: Number(process.env.BENCH_VERDICT_WAIT_MS) } : {}),
});
const ingress = await startIngress({
  port: 0,
  spoolDir: join(dir, 'spool'),
  maxBytes,
  maxClients: 200,
  handoff: workerHandoff(runtime.url, env('BENCH_DEV_TOKEN')),
});
process.stdout.write(JSON.stringify({ ready: true, smtpPort: ingress.port, workerUrl: runtime.url.href }) + '\n');

createInterface({ input: process.stdin }).on('line', (line) => {
  // "summary <n>": the answer names n, so that two equal answers are told apart.
  const m = /^summary (\d+)$/.exec(line.trim());
  if (m) {
    const seq = Number(m[1]);
    runtime.summary().then(
      (s) => process.stdout.write(JSON.stringify({ summary: s, seq }) + '\n'),
      (err: unknown) => process.stdout.write(JSON.stringify({ summary: null, seq, error: String(err) }) + '\n'),
    );
  }
});

let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  void (async () => {
    await ingress.close().catch(() => undefined);
    await runtime.dispose().catch(() => undefined);
    process.exit(0);
  })();
});
