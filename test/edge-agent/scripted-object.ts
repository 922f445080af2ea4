// A scripted queue object: a plain WebSocket server that speaks wire frames by
// hand, so a test can send what the real object never would (corrupt transfers,
// redeliveries of an acked id, several messages at once) and see every frame.
import { createHash, randomBytes } from 'node:crypto';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  encodeFrame, parseAgentFrame, PING, PONG, PROTOCOL_VERSION,
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
}

/** What this helper needs of a tap Test: also met by the fuzzers' long mode, which runs without tap. */
export interface Teardowns { teardown(fn: () => unknown): void }

export async function scriptedObject(t: Teardowns) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wss.once('listening', r));
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
      ws, frames, log: [], pong: true, hello: null,
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
        ws.send(encodeFrame({ type: 'welcome', v: PROTOCOL_VERSION, session: randomBytes(16).toString('hex'), window: f.window, maxChunk: 1 << 20 }));
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
  t.teardown(() => new Promise((r) => { for (const c of wss.clients) c.terminate(); wss.close(r); }));
  const port = (wss.address() as { port: number }).port;
  return {
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
