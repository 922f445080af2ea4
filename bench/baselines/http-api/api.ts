// BASELINE — NOT PRODUCT CODE. Child process: seed 002's home-side HTTP API (section 3.1.2,
// FastAPI) in Node: POST /api/v1/inbound-mail with a JSON body {from, to, subject, raw,
// timestamp} and an X-API-Key header; `raw` is encoded back to UTF-8 and delivered with
// one LMTP connection per message, like smtplib.SMTP(...).sendmail(...); quit().
// See bench/baselines/README.md for what is reproduced and what is not.
//
// Env: BENCH_API_KEY, BENCH_LMTP (lmtp://host:port). Prints {"ready":true,port}. SIGTERM stops it.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { LmtpClient } from '../../../lmtp-proxy/client.ts';
import { parseTarget } from '../../../lmtp-proxy/target.ts';

const API_KEY = process.env.BENCH_API_KEY ?? '';
const target = parseTarget(process.env.BENCH_LMTP ?? '');
if (API_KEY.length < 16) throw new Error('BENCH_API_KEY must be set');

interface InboundEmail { from: string; to: string; subject: string; raw: string; timestamp: string }

function reply(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
}

/** pydantic's InboundEmail: every field present and a string, `to` an address. */
function validate(v: unknown): InboundEmail | null {
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  const str = (k: string): string | null => (typeof o[k] === 'string' ? (o[k] as string) : null);
  const from = str('from'), to = str('to'), subject = str('subject'), raw = str('raw'), timestamp = str('timestamp');
  if (from === null || to === null || subject === null || raw === null || timestamp === null) return null;
  if (!/^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$/.test(to)) return null;  // EmailStr
  return { from, to, subject, raw, timestamp };
}

/** smtplib._fix_eols: every CRLF, bare LF and bare CR becomes CRLF. */
function fixEols(b: Buffer): Buffer {
  if (!b.includes(0x0a) && !b.includes(0x0d)) return b;
  return Buffer.from(b.toString('latin1').replace(/\r\n|\n|\r(?!\n)/g, '\r\n'), 'latin1');
}

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  yield b;
}

/** smtplib.SMTP(host, port) + sendmail(from, [to], data) + quit(): a connection per message. */
async function sendmail(mail: InboundEmail): Promise<{ ok: boolean; text: string }> {
  const client = new LmtpClient(target, { localName: 'mailserver-api', disable: ['PIPELINING', 'CHUNKING'] });
  try {
    const data = fixEols(Buffer.from(mail.raw, 'utf8'));
    const [r] = await client.deliver({ sender: mail.from, recipients: [mail.to] }, once(data), { size: data.byteLength });
    return r?.outcome === 'delivered' ? { ok: true, text: r.text } : { ok: false, text: r ? `${r.code} ${r.text}` : 'no result' };
  } finally {
    await client.close();
  }
}

// A blocking smtplib call inside FastAPI's `async def` handler holds uvicorn's only event
// loop: deliveries happen one at a time. The chain reproduces that.
let chain: Promise<unknown> = Promise.resolve();
function serialized<T>(fn: () => Promise<T>): Promise<T> {
  const run = chain.then(fn);
  chain = run.catch(() => undefined);
  return run;
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.url === '/health') return reply(res, 200, { status: 'healthy', timestamp: new Date().toISOString() });
  if (req.method !== 'POST' || req.url !== '/api/v1/inbound-mail') return reply(res, 404, { detail: 'Not Found' });
  const parts: Buffer[] = [];
  for await (const c of req) parts.push(c as Buffer);
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(parts).toString('utf8'));
  } catch {
    return reply(res, 422, { detail: 'invalid JSON' });
  }
  const mail = validate(body);
  if (!mail) return reply(res, 422, { detail: 'validation error' });
  if (req.headers['x-api-key'] !== API_KEY) return reply(res, 401, { detail: 'Invalid API Key' });
  try {
    const r = await serialized(() => sendmail(mail));
    if (!r.ok) return reply(res, 500, { detail: `LMTP error: ${r.text}` });
    return reply(res, 200, { status: 'success', message: 'Email delivered to LMTP', recipient: mail.to });
  } catch (err) {
    return reply(res, 500, { detail: `Internal error: ${String(err)}` });
  }
}

const server = createServer((req, res) => {
  handle(req, res).catch((err: unknown) => reply(res, 500, { detail: String(err) }));
});
server.listen(0, '127.0.0.1', () => {
  const a = server.address();
  process.stdout.write(JSON.stringify({ ready: true, port: typeof a === 'object' && a ? a.port : 0 }) + '\n');
});
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
