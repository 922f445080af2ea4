// BASELINE — NOT PRODUCT CODE. Seed 002's Email Worker (section 3.3.2), reproduced for
// the benchmark: the raw message is read into memory, decoded with TextDecoder('utf-8'),
// wrapped in JSON and POSTed to the home server's HTTP API. See bench/baselines/README.md.
//
// Bundled by esbuild and run in workerd (Miniflare) by ./edge.ts. The `fetch` handler
// is only the bench's way in (what Email Routing does in production): it builds the
// message object and calls email(), like the relay's /dev/email route.

interface Env {
  DELL_API_ENDPOINT: string;
  API_KEY: string;
  DEV_INGRESS_TOKEN: string;
}

/** The part of ForwardableEmailMessage seed 002 uses. */
interface EmailMessage {
  readonly from: string;
  readonly to: string;
  readonly headers: Headers;
  readonly raw: ReadableStream<Uint8Array>;
  setReject(reason: string): void;
}

// ---- seed 002, 3.3.2 worker.js (comments translated; logic unchanged) ----------------

async function email(message: EmailMessage, env: Env): Promise<void> {
  const startTime = Date.now();
  try {
    const from = message.from;
    const to = message.to;
    const subject = message.headers.get('subject') || '(件名なし)';
    console.log(`[INFO] メール受信: From=${from}, To=${to}, Subject=${subject}`);

    // The message body as a string
    const rawEmail = await streamToString(message.raw);

    const emailData = {
      from: from,
      to: to,
      subject: subject,
      raw: rawEmail,
      timestamp: new Date().toISOString(),
    };

    const response = await fetch(env.DELL_API_ENDPOINT, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        'X-API-Key': env.API_KEY,
        'User-Agent': 'Cloudflare-Email-Worker/1.0',
      },
      body: JSON.stringify(emailData),
      // 25 s (below the Worker's 30 s limit)
      signal: AbortSignal.timeout(25000),
    });

    const elapsed = Date.now() - startTime;

    if (!response.ok) {
      const errorText = await response.text();
      console.error(`[ERROR] API応答エラー (${response.status}): ${errorText}, 経過時間=${elapsed}ms`);
      if (response.status >= 500) {
        message.setReject(`Temporary API error: ${response.status}`);
      } else {
        message.setReject(`Permanent API error: ${response.status}`);
      }
      return;
    }

    const result: unknown = await response.json();
    console.log(`[SUCCESS] メール転送成功: ${to}, 経過時間=${elapsed}ms, 結果=${JSON.stringify(result)}`);
  } catch (error) {
    const elapsed = Date.now() - startTime;
    const text = error instanceof Error ? error.message : String(error);
    console.error(`[ERROR] メール処理エラー: ${text}, 経過時間=${elapsed}ms`);
    message.setReject(`Processing failed: ${text}`);
  }
}

/** ReadableStream to string. */
async function streamToString(stream: ReadableStream<Uint8Array>): Promise<string> {
  const chunks: Uint8Array[] = [];
  const reader = stream.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
    }
    // Concatenate the Uint8Arrays
    const totalLength = chunks.reduce((acc, chunk) => acc + chunk.length, 0);
    const result = new Uint8Array(totalLength);
    let offset = 0;
    for (const chunk of chunks) {
      result.set(chunk, offset);
      offset += chunk.length;
    }
    // UTF-8 decode
    return new TextDecoder('utf-8').decode(result);
  } finally {
    reader.releaseLock();
  }
}

// ---- the bench's stand-in for Email Routing calling email() --------------------------

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname !== '/dev/email' || request.method !== 'POST') return json(404, { error: 'not found' });
    if (request.headers.get('Authorization') !== `Bearer ${env.DEV_INGRESS_TOKEN}`) return json(401, { error: 'bad token' });
    const from = url.searchParams.get('from');
    const to = url.searchParams.get('to');
    if (from === null || to === null || request.body === null) return json(400, { error: 'need ?from=&to= and a body' });
    let rejected: string | null = null;
    const headers = new Headers();
    const subject = request.headers.get('X-Mail-Subject');
    if (subject !== null) headers.set('subject', subject);
    const message: EmailMessage = { from, to, headers, raw: request.body, setReject: (r) => { rejected = r; } };
    try {
      await email(message, env);
    } catch (err) {
      return json(503, { outcome: 'tempfail', error: String(err) });
    }
    // Email Routing answers a setReject() with a permanent 5xx to the sender.
    return rejected === null ? json(200, { id: 'http-api-baseline' }) : json(550, { outcome: 'rejected', reason: rejected });
  },
};
