// Starts the real Worker + Durable Object in local workerd for a test, with
// its own persisted storage dir, and posts mail into it like Email Routing.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { request, type ClientRequest } from 'node:http';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cloudflareBlock, type BlockOptions } from '../../local/email-routing.ts';
import { startWorkerRuntime, type WorkerRuntime } from '../../local/worker-runtime.ts';

export const AGENT_TOKEN = 'agent-token-0123456789abcdef';
export const OLD_TOKEN = 'agent-token-old-0123456789';
export const DEV_TOKEN = 'dev-token-0123456789abcdef';

export interface TestWorker {
  rt: WorkerRuntime;
  /** Its persisted storage (the objects' SQLite, R2 under r2/). */
  dir: string;
  logs: string[];
  agentUrl(): string;
  /**
   * Posts `body` as Email Routing hands it over: under a fresh Cloudflare block (`opts.block`:
   * its options), or exactly `body` with `block: false` (a test that writes its own block).
   */
  post(from: string, to: string, body: Uint8Array, opts?: { block?: BlockOptions | false }): Promise<{ status: number; body: Record<string, unknown> }>;
  summary(): Promise<Record<string, number>>;
  /** The keys in the BODIES bucket (bodies in R2), sorted. */
  bodyKeys(): Promise<string[]>;
  /**
   * Restarts workerd with these R2 objects `ms` older, for tests of the orphan sweep (R2 cannot
   * backdate an object: Miniflare's own record of it is edited while workerd is down).
   */
  ageBodies(keys: string[], ms: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts a POST of a message to the dev route that announces `announced` bytes (Content-Length)
 * and writes only `sent`: a body cut short. Its 'error' is swallowed (the test cuts it on
 * purpose); the request is returned for the test to destroy, or for a restart to cut.
 */
export function postPartly(w: TestWorker, from: string, to: string, announced: number, sent: Buffer): ClientRequest {
  const url = new URL('/dev/email', w.rt.url);
  url.searchParams.set('from', from);
  url.searchParams.set('to', to);
  const req = request(url, { method: 'POST', headers: { Authorization: `Bearer ${DEV_TOKEN}`, 'Content-Length': announced } });
  req.on('error', () => undefined);
  req.write(sent);
  return req;
}

/**
 * Makes these R2 objects `ms` older in Miniflare's R2 storage under `r2Dir` (its r2Persist), which
 * must not be running: R2 cannot backdate an object, so its record is edited.
 */
export async function ageR2Objects(r2Dir: string, keys: string[], ms: number): Promise<void> {
  const meta = join(r2Dir, 'miniflare-R2BucketObject');
  let aged = 0;
  for (const f of (await readdir(meta)).filter((n) => n.endsWith('.sqlite') && n !== 'metadata.sqlite')) {
    const db = new DatabaseSync(join(meta, f));
    try {
      const set = db.prepare('UPDATE _mf_objects SET uploaded = uploaded - ? WHERE key = ?');
      for (const k of keys) aged += Number(set.run(ms, k).changes);
    } finally {
      db.close();
    }
  }
  if (aged !== keys.length) throw new Error(`aged ${aged} of ${keys.length} R2 objects: has Miniflare's R2 storage changed?`);
}

/**
 * verdictWaitMs defaults to 300 here: posts made while a test agent holds a message and does not ack stay quick.
 * `bodies: false`: no BODIES bucket, as a Worker deployed without it: bodies go into the object's chunks.
 */
/** Fixes shard 0's queue clock at `at` (a Worker started with TEST_CLOCK; bridge-worker/clock.ts) and runs what is due. */
export function setTestClock(url: URL, at: number): Promise<Response> {
  return fetch(new URL(`/dev/clock?shard=0&at=${at}`, url), { method: 'POST', headers: { Authorization: `Bearer ${DEV_TOKEN}` } });
}

export async function startTestWorker(opts: { allowedDomains?: string[]; maxMessageBytes?: number; verdictWaitMs?: number; vars?: Record<string, string>; bodies?: boolean; bodiesRemote?: string; name?: string } = {}): Promise<TestWorker> {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-worker-'));
  const logs: string[] = [];
  const rt = await startWorkerRuntime({
    persistDir: dir, agentTokens: [AGENT_TOKEN, OLD_TOKEN], devIngressToken: DEV_TOKEN,
    allowedDomains: opts.allowedDomains ?? [], maxMessageBytes: opts.maxMessageBytes ?? 25 * 1024 * 1024,
    // Tests of the R2 path send small messages: every body to R2 unless a test asks for the
    // inline path (INLINE_MAX_BYTES; test/bridge-worker/inline.test.ts, and the local relay's default).
    verdictWaitMs: opts.verdictWaitMs ?? 300, vars: { INLINE_MAX_BYTES: '0', ...opts.vars }, bodies: opts.bodies ?? true,
    ...(opts.bodiesRemote === undefined ? {} : { bodiesRemote: opts.bodiesRemote }),
    ...(opts.name === undefined ? {} : { name: opts.name }),
    onLog: (l) => logs.push(l),
  });
  return {
    rt, dir, logs,
    agentUrl: () => new URL('/agent', rt.url).href.replace(/^http/, 'ws'),
    async post(from, to, body, o = {}) {
      const url = new URL('/dev/email', rt.url);
      url.searchParams.set('from', from);
      url.searchParams.set('to', to);
      const raw = o.block === false ? body : Buffer.concat([cloudflareBlock(from, to, o.block), body]);
      const res = await fetch(url, { method: 'POST', body: raw, headers: { Authorization: `Bearer ${DEV_TOKEN}` } });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    },
    summary: () => rt.summary(),
    async bodyKeys() {
      const b = await rt.mf.getR2Bucket('BODIES');
      return (await b.list()).objects.map((o) => o.key).sort();
    },
    async ageBodies(keys, ms) {
      await rt.restart({
        whileDown: () => ageR2Objects(join(dir, 'r2'), keys, ms),
      });
    },
    async stop() {
      await rt.dispose();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
