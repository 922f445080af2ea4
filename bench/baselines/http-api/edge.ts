// BASELINE — NOT PRODUCT CODE. Child process: the Cloudflare side of seed 002's design on
// one machine: its Email Worker (./worker.ts) in workerd via Miniflare, and the project's
// SMTP ingress standing in for Email Routing, exactly as on the relay path.
//
// The stand-in hands each message to the Worker through local/handoff.ts, as the relay does, plus
// the Subject header in X-Mail-Subject: Email Routing parses headers outside the Worker,
// and message.headers.get('subject') is all seed 002 uses of them.
//
// Env: BENCH_DIR, BENCH_DEV_TOKEN, BENCH_API_URL, BENCH_API_KEY, BENCH_MAX_BYTES.
// Prints {"ready":true,smtpPort,workerUrl} on stdout. SIGTERM stops it.
import { build } from 'esbuild';
import { Miniflare } from 'miniflare';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startIngress, type HandoffResult, type Received } from '../../../local/ingress.ts';
import { postToWorker } from '../../../local/handoff.ts';

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

const HEAD_BYTES = 65536;

/** The first 64 KiB of the message, from memory or its spool file. */
async function headOf(message: Received): Promise<Buffer> {
  if (message.kind === 'memory') {
    const head: Buffer[] = [];
    let n = 0;
    for (const c of message.chunks) {
      if (n >= HEAD_BYTES) break;
      head.push(c);
      n += c.byteLength;
    }
    return Buffer.concat(head).subarray(0, HEAD_BYTES);
  }
  const fh = await open(message.path, 'r');
  try {
    const buf = Buffer.alloc(HEAD_BYTES);
    const { bytesRead } = await fh.read(buf, 0, buf.byteLength, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** The Subject header, unfolded, from the message's header section. */
async function subjectOf(message: Received): Promise<string | null> {
  const text = (await headOf(message)).toString('latin1');
  const end = text.search(/\r?\n\r?\n/);
  const head = (end < 0 ? text : text.slice(0, end)).replace(/\r?\n[ \t]+/g, ' ');
  const m = /^subject:[ \t]*(.*)$/im.exec(head);
  return m?.[1] ? m[1].replace(/[^\x20-\x7e]/g, '?') : null;
}

// The same ingress -> Worker hop as the relay's (local/handoff.ts), plus the Subject header.
async function send(sender: string, recipient: string, message: Received): Promise<HandoffResult> {
  const subject = await subjectOf(message);
  return postToWorker(workerUrl, env('BENCH_DEV_TOKEN'), sender, recipient, message, subject === null ? {} : { 'X-Mail-Subject': subject });
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
