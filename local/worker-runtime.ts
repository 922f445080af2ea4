// Runs bridge-worker in local workerd (Miniflare): the stand-in for
// Cloudflare's edge. The Worker is bundled in memory by esbuild, as wrangler
// does; its Durable Object storage persists under `persistDir`, and its R2
// bucket BODIES (the message bodies, as wrangler.toml binds it) under `persistDir`/r2.
import { build } from 'esbuild';
import { Miniflare } from 'miniflare';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { shardName } from '../bridge-worker/shard-hash.ts';
import { r2RemoteBinding } from './r2-remote.ts';

const entry = fileURLToPath(new URL('../bridge-worker/index.ts', import.meta.url));

export interface WorkerRuntimeOptions {
  persistDir: string;
  /**
   * The Worker's script name (default none). Its Durable Object ids derive from it, as on the
   * edge from the namespace: two names are two deployments (tests of a shared bucket).
   */
  name?: string;
  agentTokens: string[];
  devIngressToken: string;
  allowedDomains?: string[];
  maxMessageBytes?: number;
  /** email()'s wait for the agent's verdict; unset = the Worker's default. */
  verdictWaitMs?: number;
  port?: number;
  /** More Worker vars (e.g. RETRY_FIRST_MS), as in wrangler.toml [vars]. */
  vars?: Record<string, string>;
  /**
   * false: no BODIES bucket, as a Worker deployed without one: bodies go into the object's
   * SQLite chunks (tests of that path and of upgrades). Default: bound, as in wrangler.toml.
   */
  bodies?: boolean;
  /** Each console line of the Worker (JSON events), for logs and tests. */
  onLog?: (line: string) => void;
  /**
   * host:port of an R2 bucket in another process (local/r2-remote.ts) to bind as BODIES, as
   * on the edge, where R2's work is not the Worker's: for CPU measurements.
   */
  bodiesRemote?: string;
  /**
   * Another Worker entry to bundle instead of bridge-worker/index.ts, binding the same classes
   * (bench/worker/metered-worker.ts: the real Worker with its object metered).
   */
  entry?: string;
}

export interface WorkerRuntime {
  url: URL;
  mf: Miniflare;
  /** Messages in the queue by state (acked ones are gone). */
  summary(): Promise<Record<string, number>>;
  /**
   * Restarts workerd on the same persisted storage (a crash of the edge, or a redeploy).
   * `bodies`: bind BODIES from now on or not (a deploy that adds the bucket); `whileDown`:
   * runs while workerd is stopped (a test that edits the persisted storage).
   */
  restart(o?: { bodies?: boolean; whileDown?: () => Promise<void> }): Promise<void>;
  dispose(): Promise<void>;
}

export async function bundleWorker(main = entry): Promise<string> {
  const out = await build({
    entryPoints: [main],
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    conditions: ['workerd', 'worker', 'browser'],
    external: ['cloudflare:*'],
    logLevel: 'silent',
  });
  const file = out.outputFiles[0];
  if (!file) throw new Error('esbuild produced no output for the Worker');
  return file.text;
}

export async function startWorkerRuntime(opts: WorkerRuntimeOptions): Promise<WorkerRuntime> {
  const script = await bundleWorker(opts.entry);
  let bodies = opts.bodies ?? true;
  const options = () => ({
    ...(opts.name === undefined ? {} : { name: opts.name }),
    modules: true,
    script,
    scriptPath: opts.entry ?? entry,
    compatibilityDate: '2026-04-01',
    host: '127.0.0.1',
    port: opts.port ?? 0,
    unsafeTriggerHandlers: true,
    durableObjects: { RELAY: { className: 'RelayQueue', useSQLite: true } },
    durableObjectsPersist: opts.persistDir,
    // bodiesRemote replaces the in-process bucket: one BODIES binding, from the other process.
    ...(bodies && opts.bodiesRemote === undefined ? { r2Buckets: ['BODIES'], r2Persist: join(opts.persistDir, 'r2') } : {}),
    bindings: {
      AGENT_TOKENS: opts.agentTokens.join(','),
      DEV_INGRESS_TOKEN: opts.devIngressToken,
      ALLOWED_DOMAINS: (opts.allowedDomains ?? []).join(','),
      MAX_MESSAGE_BYTES: String(opts.maxMessageBytes ?? 25 * 1024 * 1024),
      VERDICT_WAIT_MS: opts.verdictWaitMs === undefined ? '' : String(opts.verdictWaitMs),
      ...opts.vars,
    },
    ...(opts.bodiesRemote === undefined ? {} : { unsafeBindings: [r2RemoteBinding('BODIES', opts.bodiesRemote)] }),
    handleStructuredLogs: ({ message }: { message: string }): void => { opts.onLog?.(message); },
  });
  let mf = new Miniflare(options());
  let url = await mf.ready;
  const rt: WorkerRuntime = {
    get url() { return url; },
    get mf() { return mf; },
    async summary() {
      // Summed over every shard (SHARDS, default 1).
      const ns = await mf.getDurableObjectNamespace('RELAY');
      const shards = Number(opts.vars?.SHARDS ?? '1') || 1;
      const total: Record<string, number> = {};
      for (let i = 0; i < shards; i++) {
        const stub = ns.get(ns.idFromName(shardName(i))) as unknown as { summary(): Promise<Record<string, number>> };
        // A plain copy: Miniflare's proxy of the result dies with the runtime.
        for (const [k, v] of Object.entries(await stub.summary())) total[k] = (total[k] ?? 0) + v;
      }
      return total;
    },
    async restart(o = {}) {
      const port = Number(url.port);
      await mf.dispose();
      if (o.bodies !== undefined) bodies = o.bodies;
      await o.whileDown?.();
      mf = new Miniflare({ ...options(), port });
      url = await mf.ready;
    },
    async dispose() { await mf.dispose(); },
  };
  return rt;
}
