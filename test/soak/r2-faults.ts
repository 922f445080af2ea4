// R2 faults for the soak: an HTTP proxy between the Worker's BODIES binding and the bucket in
// its own workerd (local/r2-remote.ts, as bench:cloud binds it). The binding speaks R2's own
// HTTP protocol: a put is `PUT /` (metadata, then the object's bytes), every other call a
// request whose `cf-r2-request` header names its method in JSON. The proxy can fail puts (R2's
// 500: email() must answer a temporary failure, and the sender retries), fail gets, or cut a
// get's body halfway (the agent must nack and never deliver partial bytes). Product
// code knows nothing of it: it only sees R2 failing.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type PutMode = 'pass' | 'fail';
export type GetMode = 'pass' | 'fail' | 'cut';

export interface R2FaultProxy {
  /** host:port for the Worker's `bodiesRemote`. */
  address: string;
  put: PutMode;
  get: GetMode;
  /** What the proxy did: puts failed, gets failed, gets cut short. */
  readonly counts: { puts: number; putsFailed: number; gets: number; getsFailed: number; getsCut: number };
  close(): Promise<void>;
}

/**
 * The R2 method a request is for, and the bytes read to learn it. A `PUT` carries its call's
 * JSON in its first `cf-r2-metadata-size` bytes (put, delete, multipart); any other request in
 * its `cf-r2-request` header (get, head, list).
 */
async function r2Method(req: http.IncomingMessage): Promise<{ method: string; head: Buffer }> {
  const parse = (json: string): string => {
    try {
      const m = (JSON.parse(json) as { method?: unknown }).method;
      return typeof m === 'string' ? m : '?';
    } catch {
      return '?';
    }
  };
  if (req.method !== 'PUT') return { method: parse(String(req.headers['cf-r2-request'] ?? '{}')), head: Buffer.alloc(0) };
  const size = Number(req.headers['cf-r2-metadata-size'] ?? NaN);
  // Listened to, not iterated: leaving a for-await loop would destroy the request.
  const head = await new Promise<Buffer>((resolve, reject) => {
    const parts: Buffer[] = [];
    let have = 0;
    const done = (): void => {
      req.off('data', onData).off('end', done).off('error', reject);
      resolve(Buffer.concat(parts));
    };
    const onData = (chunk: Buffer): void => {
      parts.push(chunk);
      have += chunk.length;
      if (!(have < size)) { req.pause(); done(); }
    };
    req.on('data', onData).on('end', done).on('error', reject);
  });
  return { method: parse(head.subarray(0, size).toString('utf8')), head };
}

export async function startR2FaultProxy(target: string): Promise<R2FaultProxy> {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const counts = { puts: 0, putsFailed: 0, gets: 0, getsFailed: 0, getsCut: 0 };
  const server = http.createServer((req, res) => { serve(req, res).catch(() => res.socket?.destroy()); });
  const serve = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const { method, head } = await r2Method(req);
    if (method === 'put') counts.puts++;
    if (method === 'get') counts.gets++;
    if ((method === 'put' && proxy.put === 'fail') || (method === 'get' && proxy.get === 'fail')) {
      if (method === 'put') counts.putsFailed++;
      else counts.getsFailed++;
      // R2's own answer to a call it could not serve (what Miniflare's bucket answers, and the
      // binding throws): 500, cf-r2-error InternalError. A reset connection would not do: the
      // runtime takes it for a stale kept-alive one and sends the call again.
      const answer = (): void => {
        res.writeHead(500, { 'cf-r2-error': JSON.stringify({ message: 'We encountered an internal error. Please try again.', version: 1, v4code: 10001 }) });
        res.end();
      };
      if (req.readableEnded) answer();
      else req.on('end', answer).resume();
      return;
    }
    const cut = method === 'get' && proxy.get === 'cut';
    const up = http.request({ host, port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      if (!cut) { answer.pipe(res); return; }
      // Half the bytes (metadata and the object's first part; the first piece when the length
      // is not given), then the connection dropped.
      counts.getsCut++;
      const length = Number(answer.headers['content-length'] ?? NaN);
      let left = length > 1 ? Math.floor(length / 2) : 1;
      answer.on('data', (chunk: Buffer) => {
        if (left <= 0) return;
        res.write(length > 1 ? chunk.subarray(0, left) : chunk);
        left -= chunk.length;
        if (left <= 0) { answer.destroy(); setTimeout(() => res.socket?.destroy(), 20); }
      });
      answer.on('end', () => res.socket?.destroy());
    });
    up.on('error', () => res.socket?.destroy());
    if (head.length > 0) up.write(head);
    req.pipe(up);
  };
  // A binding that gave up mid-call resets its side: nothing for the proxy to do about it.
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const proxy: R2FaultProxy = {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    put: 'pass', get: 'pass', counts,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
  return proxy;
}
