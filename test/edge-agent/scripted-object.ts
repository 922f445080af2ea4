// A scripted queue object: a plain WebSocket server that speaks wire frames by
// hand, so a test can send what the real object never would (corrupt transfers,
// redeliveries of an acked id, several messages at once) and see every frame.
// On the same port it answers the agent's body fetches (GET /agent/body/<id>) as
// each test scripts them (bodies in R2).
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  BODY_SESSION_HEADER, encodeFrame, parseAgentFrame, PING, PONG, PROTOCOL_VERSION,
  type AgentFrame, type BounceFrame, type HelloFrame, type MessageFrame, type RecipientResult,
} from '../../protocol/wire.ts';

export const TOKEN = 'test-token-0123456789abcdef';

/** One agent connection as the object sees it. */
export interface Conn {
  ws: WebSocket;
  /** Control frames not yet taken with next(), in arrival order. */
  frames: AgentFrame[];
  /** Every control frame received, in arrival order (never spliced). */
  log: AgentFrame[];
  /** Takes the first frame of this type, waiting for it (at most 10 s). */
  next(type: AgentFrame['type']): Promise<AgentFrame>;
  /** Answer pings with pongs (true unless a test turns it off). */
  pong: boolean;
  /** The agent's hello on this connection. */
  hello: HelloFrame | null;
  /** The session its welcome named. */
  session: string | null;
}

/** What this helper needs of a tap Test: also met by the fuzzers' long mode, which runs without tap. */
export interface Teardowns { teardown(fn: () => unknown): void }

/** Answers one body fetch (the request already checked for the token). */
export type BodyServer = (res: ServerResponse, req: IncomingMessage) => void;

export async function scriptedObject(t: Teardowns) {
  /** How each body is served, by message id; unknown ids get 404. */
  const bodies = new Map<string, BodyServer>();
  /** Every body fetch, in order: its id, its shard parameter, whether its token was right, the session it named. */
  const fetches: { id: string; shard: string | null; authorized: boolean; session: string | null }[] = [];
  const http = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const m = /^\/agent\/body\/([0-9a-f]{32})$/.exec(u.pathname);
    if (req.method !== 'GET' || !m) return void res.writeHead(404).end();
    const id = m[1] ?? '';
    const authorized = req.headers.authorization === `Bearer ${TOKEN}`;
    const session = req.headers[BODY_SESSION_HEADER.toLowerCase()];
    fetches.push({ id, shard: u.searchParams.get('shard'), authorized, session: typeof session === 'string' ? session : null });
    if (!authorized) return void res.writeHead(401).end();
    const serve = bodies.get(id);
    if (!serve) return void res.writeHead(404).end('no such message in flight');
    serve(res, req);
  });
  const sockets = new Set<import('node:net').Socket>();
  http.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const wss = new WebSocketServer({ server: http });
  const conns: Conn[] = [];
  const waiting: ((c: Conn) => void)[] = [];
  const state: { refuse: boolean; kick: string | null } = { refuse: false, kick: null };
  /** Text frames from the agent that parseAgentFrame refused (the session was closed with 1008). */
  const refused: string[] = [];
  wss.on('connection', (ws, req) => {
    if (state.refuse) return ws.terminate();
    if (req.headers.authorization !== `Bearer ${TOKEN}`) return ws.close(1008, 'token');
    const frames: AgentFrame[] = [];
    let wake: (() => void) | null = null;
    const conn: Conn = {
      ws, frames, log: [], pong: true, hello: null, session: null,
      async next(type) {
        const until = Date.now() + 10_000;
        for (;;) {
          if (Date.now() > until) throw new Error(`no ${type} frame within 10 s; have ${JSON.stringify(frames)}`);
          const i = frames.findIndex((f) => f.type === type);
          if (i >= 0) return frames.splice(i, 1)[0] as AgentFrame;
          await new Promise<void>((r) => { wake = r; setTimeout(r, 200); });
        }
      },
    };
    ws.on('message', (data, binary) => {
      const text = String(data);
      if (binary) return;
      if (text === PING) {
        if (conn.pong) ws.send(PONG);
        return;
      }
      const f = parseAgentFrame(text);
      if (!f) {
        refused.push(text);
        return ws.close(1008, 'bad frame');
      }
      if (f.type === 'hello') {
        conn.hello = f;
        conn.session = randomBytes(16).toString('hex');
        ws.send(encodeFrame({ type: 'welcome', v: PROTOCOL_VERSION, session: conn.session, window: f.window, maxChunk: 1 << 20 }));
        conns.push(conn);
        if (state.kick !== null) ws.close(1008, state.kick);
        else waiting.shift()?.(conn);
      } else {
        frames.push(f);
        conn.log.push(f);
      }
      wake?.();
    });
  });
  t.teardown(() => new Promise((r) => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    for (const s of sockets) s.destroy();
    http.close(() => r(undefined));
  }));
  const port = (http.address() as { port: number }).port;
  return {
    /** Body fetches are answered by these (set one per message id before its frame goes out). */
    bodies,
    fetches,
    url: `ws://127.0.0.1:${port}/agent`,
    port,
    conns,
    refused,
    /** While true, every connection is dropped at once (the object unreachable). */
    get refuse() { return state.refuse; },
    set refuse(v: boolean) {
      state.refuse = v;
      if (v) for (const c of wss.clients) c.terminate();
    },
    /**
     * While set, every session is closed with 1008 and this reason right after its welcome, as
     * the object does with a frame it refuses (issue #16). Such sessions are in `conns` only.
     */
    get kick() { return state.kick; },
    set kick(v: string | null) { state.kick = v; },
    /** The next connection, once it has its welcome. */
    connection: (): Promise<Conn> => new Promise((r) => waiting.push(r)),
  };
}

export function header(id: string, body: Buffer, recipients: string[], attempt = 1, sha = createHash('sha256').update(body).digest('hex')): MessageFrame {
  return { type: 'message', id, attempt, sender: 's@example.net', recipients, size: body.byteLength, sha256: sha, receivedAt: Date.UTC(2026, 10, 28, 12) };
}

/** Sends a message as the object does: header, binary chunks, end. */
export function push(c: Conn, h: MessageFrame, body: Buffer, chunk = 1000): void {
  c.ws.send(encodeFrame(h));
  let n = 0;
  for (let i = 0; i < body.byteLength; i += chunk, n++) c.ws.send(body.subarray(i, i + chunk), { binary: true });
  c.ws.send(encodeFrame({ type: 'end', id: h.id, chunks: n }));
}

/** A bounce task as the object sends it, for a message from s@example.net refused for alice. */
export function bounceTask(id: string, headers: Buffer, results?: RecipientResult[]): BounceFrame {
  return {
    type: 'bounce', id, sender: 's@example.net', receivedAt: Date.UTC(2026, 10, 28, 12), reason: 'refused',
    results: results ?? [{ recipient: 'alice@example.test', code: 550, enhanced: '5.1.1', text: 'alice@example.test: user unknown', outcome: 'permfail' }],
    headers: headers.toString('base64'),
  };
}

/** Sends a bounce task (a control frame; no chunks follow). */
export function sendBounce(c: Conn, task: BounceFrame): void {
  c.ws.send(encodeFrame(task));
}

/** A 32-hex message id from a small number, so tests can tell messages apart. */
export const msgId = (n: number): string => n.toString(16).padStart(32, '0');

/**
 * A message whose body is in R2, as the object leases it: `block` (Cloudflare's, `prefix`
 * bytes) travels in the frame, `body` is what GET /agent/body/<id> should return (md5 of it).
 */
export function fetchHeader(id: string, block: Buffer, body: Buffer, recipients: string[], attempt = 1, md5 = createHash('md5').update(body).digest('hex')): MessageFrame {
  return {
    type: 'message', id, attempt, sender: 's@example.net', recipients, size: block.byteLength + body.byteLength,
    fetch: { md5, block: block.toString('base64') }, receivedAt: Date.UTC(2026, 10, 28, 12),
    ...(block.byteLength > 0 ? { prefix: block.byteLength } : {}),
  };
}

/** Serves `body` whole, with its length, as the Worker streams an R2 object. */
export const serveWhole = (body: Buffer): BodyServer => (res) => {
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(body.byteLength) });
  res.end(body);
};
