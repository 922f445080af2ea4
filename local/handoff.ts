// The ingress -> Worker hop on one machine: POSTs a received message to the
// Worker's dev-only /dev/email route, which runs the same handleEmail() as
// Email Routing's email() (wrangler's own local email route stops at 1 MiB).
// Like Email Routing, it writes a fresh Cloudflare block above the message on
// every attempt: the Worker gets what message.raw holds in production.
import { createReadStream } from 'node:fs';
import { request } from 'node:http';
import type { Handoff, HandoffResult, Received } from './ingress.ts';
import { cloudflareBlock, type BlockOptions } from './email-routing.ts';

export function workerHandoff(workerUrl: URL, token: string, block: BlockOptions = {}): Handoff {
  return { send: (sender, recipient, message) => postToWorker(workerUrl, token, sender, recipient, message, {}, block) };
}

/**
 * One recipient's copy to /dev/email, under a fresh Cloudflare block (`block`: its options),
 * with `headers` added to the request (the HTTP-API baseline adds one).
 */
export function postToWorker(
  workerUrl: URL, token: string, sender: string, recipient: string, message: Received, headers: Record<string, string> = {},
  block: BlockOptions = {},
): Promise<HandoffResult> {
  const head = cloudflareBlock(sender, recipient, block);
  const url = new URL('/dev/email', workerUrl);
  url.searchParams.set('from', sender);
  url.searchParams.set('to', recipient);
  const attempt = (again: boolean): Promise<HandoffResult> => new Promise((resolve) => {
    const req = request(url, {
      method: 'POST',
      headers: { ...headers, Authorization: `Bearer ${token}`, 'Content-Length': head.byteLength + message.size, 'Content-Type': 'message/rfc822' },
    }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => {
        let body: { id?: unknown; reason?: unknown; error?: unknown } = {};
        try {
          body = JSON.parse(Buffer.concat(parts).toString('utf8')) as typeof body;
        } catch {
          // keep {}: reported below with the status
        }
        if (res.statusCode === 200 && typeof body.id === 'string') return resolve({ ok: true, id: body.id });
        if (res.statusCode === 550) return resolve({ ok: false, permanent: true, reason: String(body.reason ?? 'rejected') });
        resolve({ ok: false, permanent: false, reason: `worker answered HTTP ${res.statusCode}: ${String(body.error ?? '')}` });
      });
      res.on('error', (err) => resolve({ ok: false, permanent: false, reason: `worker response: ${err.message}` }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      // A kept-alive connection the Worker's runtime closed as this request went out on it
      // (Node's documented race: req.reusedSocket): nothing got an answer, so one more try on a
      // fresh connection. Were the copy stored after all, the Worker's dedupe answers with its id.
      if (!again && req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) return resolve(attempt(true));
      resolve({ ok: false, permanent: false, reason: `worker unreachable: ${err.message}` });
    });
    req.write(head);
    if (message.kind === 'file') {
      createReadStream(message.path).on('error', (err) => req.destroy(err)).pipe(req);
    } else {
      // One write of the held bytes (a copy only when smtp-server gave more than one chunk).
      const [only] = message.chunks;
      req.end(message.chunks.length === 1 && only ? only : Buffer.concat(message.chunks, message.size));
    }
  });
  return attempt(false);
}
