// The Worker: a thin router in front of the queue object, plus Email Routing's
// email() entry point.
import { handleAdmin } from './admin.ts';
import { hasToken } from './auth.ts';
import { handleEmail, type IncomingEmail } from './email.ts';
import { allShards, shardStub } from './shards.ts';
import { WorkerConfigError, readConfig } from './env.ts';
import type { WorkerEnv } from './worker-env.ts';
import { log } from './log.ts';
import { setTestClock } from './clock.ts';
import { BODY_SESSION_HEADER, isMessageId } from '../protocol/wire.ts';
// Compiles every message's pure code at startup, not on the first message (issue #15).
import './warm-up.ts';
import './warm-up-chunks.ts';

export { RelayQueue } from './relay-do.ts';

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

/**
 * POST /dev/email?from=&to= — the local SMTP ingress's way into the same
 * handleEmail() as Email Routing, without wrangler's 1 MiB local email limit.
 * Exists only when DEV_INGRESS_TOKEN is set.
 */
async function devEmail(request: Request, env: WorkerEnv, token: string): Promise<Response> {
  if (request.method !== 'POST') return json(405, { error: 'POST only' });
  if (!(await hasToken(request, [token]))) return json(401, { error: 'bad or missing bearer token' });
  const url = new URL(request.url);
  const from = url.searchParams.get('from');
  const to = url.searchParams.get('to');
  const size = Number(request.headers.get('Content-Length') ?? 'NaN');
  if (from === null || to === null || request.body === null || !Number.isSafeInteger(size) || size < 0) {
    return json(400, { error: 'need ?from=&to=, a body and Content-Length' });
  }
  let rejected: string | null = null;
  const message: IncomingEmail = {
    from, to, raw: request.body, rawSize: size,
    setReject: (reason) => { rejected = reason; },
  };
  try {
    const out = await handleEmail(message, env);
    if (out.outcome === 'accepted') return json(200, out);
    // Read what is left of the body before answering: an HTTP client still sending it would
    // see a reset instead of the 550 (dev route only; Email Routing has no such problem).
    if (!request.body.locked) await request.body.pipeTo(new WritableStream()).catch(() => undefined);
    return json(550, { outcome: 'rejected', reason: rejected });
  } catch (err) {
    // What a thrown email() becomes at the edge: a temporary failure.
    log('email.tempfail', { to, error: String(err) });
    return json(503, { outcome: 'tempfail', error: String(err) });
  }
}

/**
 * POST /dev/clock?shard=N&at=T — tests only (clock.ts): fixes shard N's clock at T and runs
 * what is due by then. Exists only with TEST_CLOCK, which no wrangler file sets, and DEV_INGRESS_TOKEN.
 */
async function devClock(request: Request, env: WorkerEnv, token: string, shards: number): Promise<Response> {
  if (request.method !== 'POST') return json(405, { error: 'POST only' });
  if (!(await hasToken(request, [token]))) return json(401, { error: 'bad or missing bearer token' });
  const i = shardIndex(request, shards);
  const at = Number(new URL(request.url).searchParams.get('at'));
  if (i === null || !Number.isSafeInteger(at)) return json(400, { error: 'need ?shard=&at=' });
  // Here too: a queue object starting in this isolate (after a restart) reads it in its constructor.
  setTestClock(env, at);
  await shardStub(env, i).testClock(at);
  return json(200, { at });
}

/** The shard a request names (?shard=N, default 0), or null when it has no such shard. */
function shardIndex(request: Request, shards: number): number | null {
  const text = new URL(request.url).searchParams.get('shard') ?? '0';
  const i = /^[0-9]{1,2}$/.test(text) ? Number(text) : -1;
  return i < 0 || i >= shards ? null : i;
}

/** GET /agent?shard=N: the agent holds one connection per shard (default 0). */
function agentShard(request: Request, env: WorkerEnv, shards: number): Promise<Response> | Response {
  const i = shardIndex(request, shards);
  if (i === null) return json(404, { error: `no shard ${new URL(request.url).searchParams.get('shard') ?? '0'}: this relay has ${shards}` });
  return shardStub(env, i).fetch(request);
}

/**
 * GET /agent/body/<id>?shard=N: the R2 body of a message the shard has leased (in-flight) to
 * the session the request names (BODY_SESSION_HEADER; an older agent names none, see bodyOf),
 * streamed from R2 as it is (no JS per byte). The agent checks it against the MD5 of its
 * message frame; anything else (not leased, no such body) is a 404 and the agent nacks.
 */
async function agentBody(request: Request, env: WorkerEnv, shards: number, id: string): Promise<Response> {
  if (request.method !== 'GET') return json(405, { error: 'GET only' });
  const i = shardIndex(request, shards);
  if (i === null || !env.BODIES || !isMessageId(id)) return json(404, { error: 'not found' });
  // Only the agent holding the lease: it names its session (a token alone is every agent's).
  const session = request.headers.get(BODY_SESSION_HEADER);
  if (session !== null && !isMessageId(session)) return json(404, { error: 'not found' });
  const body = await shardStub(env, i).bodyOf(id, session);
  if (body === null) return json(404, { error: 'no such message in flight for this session' });
  const object = await env.BODIES.get(body.key);
  if (object === null) {
    log('body.missing', { id, key: body.key });
    return json(404, { error: 'the message\'s body is missing from R2' });
  }
  return new Response(object.body, {
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(object.size), 'Cache-Control': 'no-store' },
  });
}

export default {
  async fetch(request, env): Promise<Response> {
    let cfg;
    try {
      cfg = readConfig(env);
    } catch (err) {
      if (err instanceof WorkerConfigError) log('config.invalid', { error: err.message });
      return json(500, { error: 'worker misconfigured; see logs' });
    }
    const { pathname } = new URL(request.url);
    if (pathname === '/admin' || pathname.startsWith('/admin/')) {
      if (cfg.adminToken === null && cfg.statusToken === null) return json(404, { error: 'not found' });
      return handleAdmin(request, { admin: cfg.adminToken, status: cfg.statusToken }, allShards(env, cfg.shards), env.BODIES ?? null);
    }
    if (pathname.startsWith('/agent/body/')) {
      if (!(await hasToken(request, cfg.agentTokens))) return json(401, { error: 'bad or missing bearer token' });
      return agentBody(request, env, cfg.shards, pathname.slice('/agent/body/'.length));
    }
    switch (pathname) {
      case '/agent':
        if (!(await hasToken(request, cfg.agentTokens))) return json(401, { error: 'bad or missing bearer token' });
        return agentShard(request, env, cfg.shards);
      case '/dev/email':
        if (cfg.devIngressToken === null) return json(404, { error: 'not found' });
        return devEmail(request, env, cfg.devIngressToken);
      case '/dev/clock':
        if (env.TEST_CLOCK === undefined || cfg.devIngressToken === null) return json(404, { error: 'not found' });
        return devClock(request, env, cfg.devIngressToken, cfg.shards);
      case '/healthz':
        return json(200, { ok: true });
      default:
        return json(404, { error: 'not found' });
    }
  },

  async email(message, env): Promise<void> {
    await handleEmail(message, env);
  },
} satisfies ExportedHandler<WorkerEnv>;
