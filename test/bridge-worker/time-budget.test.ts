// email() returns inside its budget (EMAIL_BUDGET_MS, well inside Email Routing's ~30 s wall
// clock) whatever VERDICT_WAIT_MS says: a 25 MiB message trickled in over 20 s, an agent that
// takes it and never answers, VERDICT_WAIT_MS at its maximum (25 s) — the verdict wait gets
// only what storing left.
import t from 'tap';
import { request } from 'node:http';
import { cloudflareBlock } from '../../local/email-routing.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, DEV_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

/** bridge-worker/email.ts EMAIL_BUDGET_MS (that module needs the Workers types, not Node's). */
const EMAIL_BUDGET_MS = 25_000;
const MiB = 1024 * 1024;
const SIZE = 25 * MiB;
const TRICKLE_MS = 20_000;

let w: TestWorker;
t.before(async () => { w = await startTestWorker({ verdictWaitMs: 25_000 }); });
t.teardown(async () => { await w.stop(); });

/** POSTs block + a SIZE-byte message to /dev/email, one 1 MiB piece every TRICKLE_MS / 25. */
function trickle(block: Buffer): Promise<{ status: number; body: Record<string, unknown>; ms: number }> {
  const url = new URL('/dev/email', w.rt.url);
  url.searchParams.set('from', 's@sender.test');
  url.searchParams.set('to', 'alice@example.test');
  const head = Buffer.from('Subject: slow\r\n\r\n');
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: 'POST',
      headers: { Authorization: `Bearer ${DEV_TOKEN}`, 'Content-Length': block.length + SIZE },
    }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(parts).toString()) as Record<string, unknown>, ms: Date.now() - start }));
    });
    req.on('error', reject);
    req.write(Buffer.concat([block, head]));
    let sent = head.length;
    const piece = (): void => {
      const n = Math.min(MiB, SIZE - sent);
      sent += n;
      if (sent < SIZE) {
        req.write(Buffer.alloc(n, 0x61));
        setTimeout(piece, TRICKLE_MS / 25);
      } else {
        req.end(Buffer.alloc(n, 0x61));
      }
    };
    setTimeout(piece, TRICKLE_MS / 25);
  });
}

t.test('a slow store and VERDICT_WAIT_MS at its maximum: email() still answers inside its budget', async (t) => {
  // An agent that leases the message and never answers: without the budget, email() would wait 25 s more.
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await a.hello({ agent: 'silent', window: 4, credit: 64 * MiB, fetch: true });
  const r = await trickle(cloudflareBlock('s@sender.test', 'alice@example.test'));
  t.equal(r.status, 200, 'stored and accepted');
  t.equal(r.body.outcome, 'accepted');
  t.ok(r.ms >= TRICKLE_MS, `the store took the trickle's time (${r.ms} ms)`);
  t.ok(r.ms <= EMAIL_BUDGET_MS, `answered in ${r.ms} ms, inside the ${EMAIL_BUDGET_MS} ms budget`);
  t.ok(a.seen.some((x) => x.kind === 'frame' && x.frame.type === 'message'), 'the agent had the message (the verdict was waited for)');
  a.close();
  await a.closed;
});
