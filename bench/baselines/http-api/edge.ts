// BASELINE — NOT PRODUCT CODE. Child process: the Cloudflare side of seed 002's design on
// one machine: its Email Worker (./worker.ts) in workerd via Miniflare, and the project's
// SMTP ingress standing in for Email Routing, exactly as on the relay path.
//
// The stand-in hands each spooled message to the Worker like local/handoff.ts does, plus
// the Subject header in X-Mail-Subject: Email Routing parses headers outside the Worker,
// and message.headers.get('subject') is all seed 002 uses of them.
//
// Env: BENCH_DIR, BENCH_DEV_TOKEN, BENCH_API_URL, BENCH_API_KEY, BENCH_MAX_BYTES.
// Prints {"ready":true,smtpPort,workerUrl} on stdout. SIGTERM stops it.
import { build } from 'esbuild';
import { Miniflare } from 'miniflare';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startIngress, type HandoffResult, type Received } from '../../../lmtp-proxy/ingress.ts';

const env = (k: string): string => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} must be set`);
  return v;
};

const entry = fileURLToPath(new URL('./worker.ts', import.meta.url));
const bundle = await build({
  entryPoints: [entry], bundle: true, write: false, format: 'esm', platform: 'neutral', target: 'es2022', logLevel: 'silent',
});
const script = bundle.outputFiles[0]?.text;
if (!script) throw new Error('esbuild produced no output for the baseline Worker');

const mf = new Miniflare({
  modules: true,
  script,
  scriptPath: entry,
  compatibilityDate: '2026-04-01',
  host: '127.0.0.1',
  port: 0,
  bindings: { DELL_API_ENDPOINT: env('BENCH_API_URL'), API_KEY: env('BENCH_API_KEY'), DEV_INGRESS_TOKEN: env('BENCH_DEV_TOKEN') },
  // The Worker logs two lines per message, as seed 002 wrote; they are dropped here.
  handleStructuredLogs: () => {},
});
const workerUrl = await mf.ready;

/** The first 64 KiB of the message, from memory or its spool file. */
async function headOf(message: Received): Promise<Buffer> {
  if (message.kind === 'memory') return Buffer.concat(message.chunks).subarray(0, 65536);
  const fh = await open(message.path, 'r');
  try {
    const buf = Buffer.alloc(65536);
    const { bytesRead } = await fh.read(buf, 0, buf.byteLength, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** The Subject header, unfolded, from the message's header section. */
async function subjectOf(message: Received): Promise<string | null> {
  {
    const text = (await headOf(message)).toString('latin1');
    const end = text.search(/\r?\n\r?\n/);
    const head = (end < 0 ? text : text.slice(0, end)).replace(/\r?\n[ \t]+/g, ' ');
    const m = /^subject:[ \t]*(.*)$/im.exec(head);
    return m?.[1] ? m[1].replace(/[^\x20-\x7e]/g, '?') : null;
  }
}

function send(sender: string, recipient: string, message: Received): Promise<HandoffResult> {
  const url = new URL('/dev/email', workerUrl);
  url.searchParams.set('from', sender);
  url.searchParams.set('to', recipient);
  return subjectOf(message).then((subject) => new Promise((resolve) => {
    const headers: Record<string, string | number> = {
      Authorization: `Bearer ${env('BENCH_DEV_TOKEN')}`, 'Content-Length': message.size, 'Content-Type': 'message/rfc822',
    };
    if (subject !== null) headers['X-Mail-Subject'] = subject;
    const req = request(url, { method: 'POST', headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => {
        let body: { id?: unknown; reason?: unknown; error?: unknown } = {};
        try {
          body = JSON.parse(Buffer.concat(parts).toString('utf8')) as typeof body;
        } catch {
          // reported with the status below
        }
        if (res.statusCode === 200 && typeof body.id === 'string') return resolve({ ok: true, id: body.id });
        if (res.statusCode === 550) return resolve({ ok: false, permanent: true, reason: String(body.reason ?? 'rejected') });
        resolve({ ok: false, permanent: false, reason: `worker answered HTTP ${res.statusCode}: ${String(body.error ?? '')}` });
      });
      res.on('error', (err) => resolve({ ok: false, permanent: false, reason: `worker response: ${err.message}` }));
    });
    req.on('error', (err) => resolve({ ok: false, permanent: false, reason: `worker unreachable: ${err.message}` }));
    if (message.kind === 'file') createReadStream(message.path).on('error', (err) => req.destroy(err)).pipe(req);
    else req.end(Buffer.concat(message.chunks, message.size));
  }));
}

const ingress = await startIngress({
  port: 0, spoolDir: join(env('BENCH_DIR'), 'spool'), maxBytes: Number(env('BENCH_MAX_BYTES')), maxClients: 200, handoff: { send },
});
process.stdout.write(JSON.stringify({ ready: true, smtpPort: ingress.port, workerUrl: workerUrl.href }) + '\n');

let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  void (async () => {
    await ingress.close().catch(() => undefined);
    await mf.dispose().catch(() => undefined);
    process.exit(0);
  })();
});
