// The real side of the model test: one workerd (Miniflare, with R2) for many sequences, each on
// its own queue shard, driven only through the Worker's routes (the dev email route, /agent over
// a WebSocket, /admin) and, for time, the object's test clock (clock.ts, TEST_CLOCK).
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { cloudflareBlock } from '../../local/email-routing.ts';
import { shardName, shardOf } from '../../bridge-worker/shard-hash.ts';
import { PING, PONG } from '../../protocol/wire.ts';
import type { QueueMessage } from '../../protocol/queue.ts';
import { AGENT_TOKEN, DEV_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { CFG } from './model.ts';

export let closeMs = 0;
export const ADMIN_TOKEN = 'admin-token-model-0123456789';
export const SHARDS = 2;

export interface RealAgent {
  name: string;
  raw: RawAgent;
  session: string;
  /** Frames of `raw.seen` already accounted for. */
  read: number;
  pongs: number;
}

export class Real {
  readonly w: TestWorker;
  shard = 0;
  /** This sequence's recipients: all in its shard. */
  rcpts: string[] = [];
  seq = 0;
  agents = new Map<string, RealAgent>();
  /** The last sequence did not finish cleanly: clean() before the next. */
  dirty = true;
  /** Where the queue's clock stands (null: not set in this runtime yet). */
  clockAt: number | null = null;
  /** Miniflare's handles, per runtime instance (a restart makes a new one). */
  #handles: { mf: unknown; ns: DurableObjectNamespaceLike; bucket: BucketLike } | null = null;
  #r2: DatabaseSync | null = null;
  /** Every RawAgent ever opened in this sequence, to close at its end. */
  opened: RawAgent[] = [];

  private constructor(w: TestWorker) {
    this.w = w;
  }

  static async start(): Promise<Real> {
    const w = await startTestWorker({
      verdictWaitMs: 0,
      vars: {
        TEST_CLOCK: '1', ADMIN_TOKEN, SHARDS: String(SHARDS), AFFINITY_MS: String(CFG.affinityMs),
        RETRY_FIRST_MS: String(CFG.firstRetryMs), RETRY_MAX_MS: String(CFG.maxRetryMs), MAX_AGE_MS: String(CFG.maxAgeMs),
        RETENTION_MS: String(CFG.retentionMs), DEDUPE_WINDOW_MS: String(CFG.dedupeWindowMs),
        MAX_UNSETTLED_LEASES: String(CFG.maxUnsettledLeases), ORPHAN_SWEEP_MS: String(30 * 24 * 3_600_000),
        INLINE_MAX_BYTES: String(CFG.inlineMaxBytes),
      },
    });
    return new Real(w);
  }

  /** Four addresses of shard `s`: the first three are what a recipients list may name. */
  static addresses(s: number): string[] {
    const out: string[] = [];
    for (let k = 0; out.length < 4; k++) if (shardOf(`u${k}@model.test`, SHARDS) === s) out.push(`u${k}@model.test`);
    return out;
  }

  async #h(): Promise<{ ns: DurableObjectNamespaceLike; bucket: BucketLike }> {
    const mf = this.w.rt.mf;
    if (this.#handles?.mf !== mf) {
      this.#handles = {
        mf, ns: (await mf.getDurableObjectNamespace('RELAY')) as unknown as DurableObjectNamespaceLike,
        bucket: (await mf.getR2Bucket('BODIES')) as unknown as BucketLike,
      };
    }
    return this.#handles;
  }

  async admin(method: string, path: string): Promise<{ status: number; json: Record<string, unknown> | null; bytes: Buffer; headers: Headers }> {
    const res = await fetch(new URL(path, this.w.rt.url), { method, headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
    const bytes = Buffer.from(await res.arrayBuffer());
    let json: Record<string, unknown> | null = null;
    if ((res.headers.get('content-type') ?? '').includes('json')) json = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    return { status: res.status, json, bytes, headers: res.headers };
  }

  async rows(): Promise<QueueMessage[]> {
    const r = await this.admin('GET', '/admin/messages?limit=500');
    if (r.status !== 200 || !r.json) throw new Error(`GET /admin/messages: ${r.status}`);
    return r.json.messages as QueueMessage[];
  }

  /** Posts a message as Email Routing would: a fresh Cloudflare block, then `body`. */
  async post(from: string, to: string, body: Buffer): Promise<{ status: number; body: Record<string, unknown> }> {
    return this.w.post(from === '' ? '<>' : from, to, Buffer.concat([cloudflareBlock(from, to), body]), { block: false });
  }

  /** Fixes the queue's clock at `t` and runs what is due by then (the alarm). */
  async clock(t: number): Promise<void> {
    const url = new URL(`/dev/clock?shard=${this.shard}&at=${t}`, this.w.rt.url);
    const res = await fetch(url, { method: 'POST', headers: { Authorization: `Bearer ${DEV_TOKEN}` } });
    if (res.status !== 200) throw new Error(`POST /dev/clock: ${res.status} ${await res.text()}`);
  }

  /**
   * The R2 keys of this shard, read from Miniflare's own SQLite record of the bucket (as
   * TestWorker.ageBodies edits it): a list through Miniflare's proxy costs a hundred times more.
   */
  async bodyKeys(): Promise<string[]> {
    if (this.#r2 === null) {
      const meta = join(this.w.dir, 'r2', 'miniflare-R2BucketObject');
      const f = (await readdir(meta)).find((n) => n.endsWith('.sqlite') && n !== 'metadata.sqlite');
      if (!f) {
        const { bucket } = await this.#h();
        return (await bucket.list({ prefix: `${shardName(this.shard)}/` })).objects.map((o) => o.key).sort();
      }
      this.#r2 = new DatabaseSync(join(meta, f), { readOnly: true });
    }
    const rows = this.#r2.prepare('SELECT key FROM _mf_objects WHERE key LIKE ? ORDER BY key').all(`${shardName(this.shard)}/%`);
    return rows.map((r) => String(r.key)).sort();
  }

  async connect(name: string, window: number, bounces: boolean): Promise<RealAgent> {
    const raw = new RawAgent(`${this.w.agentUrl()}?shard=${this.shard}`, AGENT_TOKEN);
    this.opened.push(raw);
    await raw.opened;
    const from = raw.seen.length;
    raw.send({ type: 'hello', v: 2, agent: `model-${name}`, window, credit: 1 << 20, bounces, fetch: true });
    const welcome = await raw.until((s) => s.slice(from).find((x) => x.kind === 'frame' && x.frame.type === 'welcome'));
    if (welcome.kind !== 'frame' || welcome.frame.type !== 'welcome') throw new Error('no welcome');
    const a: RealAgent = { name, raw, session: welcome.frame.session, read: raw.seen.indexOf(welcome) + 1, pongs: 0 };
    this.agents.set(name, a);
    return a;
  }

  /** Closes an agent's connection and waits until the object has let it go. */
  async disconnect(name: string): Promise<void> {
    const a = this.agents.get(name);
    if (!a) return;
    this.agents.delete(name);
    a.raw.close();
    const t0 = performance.now();
    await a.raw.closed;
    closeMs += performance.now() - t0;
    await this.until(async () => {
      const q = await this.admin('GET', '/admin/queue');
      const agents = (q.json?.agents ?? []) as { session: string }[];
      return !agents.some((x) => x.session === a.session) && !(await this.rows()).some((m) => m.leaseSession === a.session);
    }, `the object to let go of agent ${name}`);
  }

  /** Every agent's ping answered: what the object sent before it has arrived. */
  async barrier(): Promise<void> {
    await Promise.all([...this.agents.values()].map(async (a) => {
      const want = ++a.pongs;
      a.raw.ws.send(PING);
      await a.raw.until((s) => s.filter((x) => x.kind === 'text' && x.text === PONG).length >= want);
    }));
  }

  async until(pred: () => Promise<boolean>, what: string, ms = 5_000): Promise<void> {
    const end = Date.now() + ms;
    while (!(await pred())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Back to an empty shard, whatever a failed sequence left: agents gone, rows and bodies removed. */
  async clean(): Promise<void> {
    for (const a of [...this.agents.keys()]) await this.disconnect(a).catch(() => undefined);
    for (const raw of this.opened) raw.ws.terminate();
    this.opened = [];
    this.agents.clear();
    await this.until(async () => {
      for (const m of await this.rows()) {
        if (m.state === 'dead-letter' || m.state === 'bounced') await this.admin('DELETE', `/admin/messages/${m.id}`);
        else await this.admin('POST', `/admin/messages/${m.id}/delete`);
      }
      return (await this.rows()).length === 0;
    }, 'the queue to empty');
    const { bucket } = await this.#h();
    const left = (await bucket.list()).objects.map((o) => o.key);
    if (left.length > 0) await bucket.delete(left);
  }

  async stop(): Promise<void> {
    this.#r2?.close();
    for (const raw of this.opened) raw.ws.terminate();
    await this.w.stop();
  }
}

interface DurableObjectNamespaceLike {
  idFromName(name: string): unknown;
  get(id: unknown): { testClock(t: number | null): Promise<void> };
}
interface BucketLike {
  list(o?: { prefix?: string }): Promise<{ objects: { key: string }[] }>;
  delete(keys: string[]): Promise<void>;
}

export const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');
