// Issue #17 item 5, the whole relay from one scrape: the agent process reads the real
// Worker's GET /admin/queue with the read-only STATUS_TOKEN and exports the queue's
// numbers beside its own and the process's. Messages are posted while no agent can
// connect (its agent token is wrong), so they wait in the queue for the scrape to see.
// Also, under journald (JOURNAL_STREAM naming stdout) each line carries its priority.
import t from 'tap';
import { spawn } from 'node:child_process';
import { fstatSync, openSync, closeSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestWorker } from '../helpers/worker.ts';
import { runAgent } from './agent-process.ts';
import { metric, poll } from './in-process.ts';

const STATUS = 'status-token-0123456789abcdef';
const WRONG_AGENT_TOKEN = 'not-an-agent-token-0123456789';
const MAIN = fileURLToPath(new URL('../../edge-agent/main.ts', import.meta.url));

const worker = await startTestWorker({ vars: { STATUS_TOKEN: STATUS } });
t.teardown(() => worker.stop());
const dir = await mkdtemp(join(tmpdir(), 'mailbridge-qmetrics-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

const env = (over: Record<string, string>) => ({
  MAILBRIDGE_WORKER_URL: worker.agentUrl(), MAILBRIDGE_TOKEN: WRONG_AGENT_TOKEN, MAILBRIDGE_TARGET: 'lmtp://127.0.0.1:9',
  MAILBRIDGE_HTTP: '127.0.0.1:0', ...over,
});

t.test('/metrics shows the queue by state, its oldest message, bounces sent, and the process', async (t) => {
  const before = Date.now();
  for (const n of [1, 2]) t.equal((await worker.post('s@example.net', 'alice@example.test', Buffer.from(`Subject: ${n}\r\n\r\nhi\r\n`))).status, 200);
  const p = runAgent(env({ MAILBRIDGE_STATUS_TOKEN: STATUS, MAILBRIDGE_STATE_DIR: join(dir, 'a') }));
  t.teardown(() => { p.child.kill('SIGKILL'); });
  const failed = await p.waitEvent('connect.failed');
  t.match(failed, { level: 'warning', error: /HTTP 401/, hint: /refused the token: check MAILBRIDGE_TOKEN \/ tokenFile against the Worker's AGENT_TOKENS/ },
    'the wrong agent token: what to check');
  const { port } = await p.waitEvent('http.listening');
  const scrape = () => fetch(`http://127.0.0.1:${String(port)}/metrics`).then((r) => r.text());
  const m = await scrape();
  t.equal(metric(m, 'mailbridge_queue_messages{state="queued"}'), 2, 'two queued, no agent connected');
  t.equal(metric(m, 'mailbridge_queue_messages{state="dead-letter"}'), 0);
  t.equal(metric(m, 'mailbridge_bounces_sent_total'), 0);
  t.equal(metric(m, 'mailbridge_queue_scrape_errors_total'), 0);
  t.equal(metric(m, 'mailbridge_queue_status_up'), 1);
  const oldest = metric(m, 'mailbridge_queue_oldest_seconds{state="queued"}') ?? -1;
  t.ok(oldest >= 0 && oldest <= (Date.now() - before) / 1000 + 1, `oldest queued age ${oldest} s`);
  t.equal(metric(m, 'mailbridge_queue_oldest_seconds{state="deferred"}'), 0, 'none deferred');
  t.ok((metric(m, 'process_resident_memory_bytes') ?? 0) > 1e6, 'RSS');
  t.ok((metric(m, 'nodejs_heap_size_used_bytes') ?? 0) > 0, 'heap');
  t.ok((metric(m, 'process_cpu_user_seconds_total') ?? 0) > 0, 'CPU time');
  t.type(metric(m, 'nodejs_eventloop_lag_p99_seconds'), 'number', 'event-loop delay');
  t.match(m, /# TYPE mailbridge_bounces_sent_total counter/);
  // What is stored, by state and by store: nothing grows silently.
  t.ok((metric(m, 'mailbridge_queue_stored_bytes{state="queued"}') ?? 0) > 2 * 'Subject: 1\r\n\r\nhi\r\n'.length, 'the queued messages\' bytes');
  t.equal(metric(m, 'mailbridge_queue_stored_bytes{state="dead-letter"}'), 0, 'dead-letter shown, empty');
  t.equal(metric(m, 'mailbridge_queue_stored_bytes{state="hold"}'), 0, 'hold shown, empty');
  t.equal(metric(m, 'mailbridge_queue_stored_r2_bytes{state="queued"}'), 2 * 'Subject: 1\r\n\r\nhi\r\n'.length, 'their bodies in R2');
  t.ok((metric(m, 'mailbridge_queue_storage_bytes{store="object"}') ?? 0) > 0, 'the object\'s SQLite');
  t.equal(metric(m, 'mailbridge_queue_storage_bytes{store="r2"}'), 2 * 'Subject: 1\r\n\r\nhi\r\n'.length);
  t.equal(metric(m, 'mailbridge_queue_storage_limit_bytes{store="r2"}'), 10e9);

  // Read at most every 15 s: a third message does not show in the next scrape.
  await worker.post('s@example.net', 'alice@example.test', Buffer.from('Subject: 3\r\n\r\nhi\r\n'));
  t.equal(metric(await scrape(), 'mailbridge_queue_messages{state="queued"}'), 2, 'cached');
  t.equal((await fetch(new URL('/admin/messages', worker.rt.url), { headers: { Authorization: `Bearer ${STATUS}` } })).status, 401,
    'the status token lists no message');
});

t.test('under journald: <N> priorities; a refused status token counts errors and says what to check', async (t) => {
  // stdout is a file, and JOURNAL_STREAM names it: as systemd does with the journal's socket.
  const out = join(dir, 'journal.out');
  const fd = openSync(out, 'w');
  const st = fstatSync(fd, { bigint: true });
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', MAIN], {
    env: { PATH: process.env.PATH ?? '', ...env({ MAILBRIDGE_STATUS_TOKEN: 'wrong-status-token-0123456789', MAILBRIDGE_STATE_DIR: join(dir, 'b') }), JOURNAL_STREAM: `${st.dev}:${st.ino}` },
    stdio: ['ignore', fd, 'pipe'],
  });
  closeSync(fd);
  t.teardown(() => { child.kill('SIGKILL'); });
  const lines = () => readFileSync(out, 'utf8').split('\n').filter((l) => l !== '');
  const find = (event: string) => lines().find((l) => l.includes(`"event":"${event}"`));
  await poll('http.listening', async () => find('http.listening') ?? '', (l) => l !== '');
  const port = (JSON.parse((find('http.listening') ?? '').slice(3)) as { port: number }).port;
  t.match(find('agent.started'), /^<6>\{"ts":/, 'info: <6>');
  await poll('connect.failed', async () => find('connect.failed') ?? '', (l) => l !== '');
  t.match(find('connect.failed'), /^<4>\{/, 'warning: <4>');
  const m = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
  t.equal(metric(m, 'mailbridge_queue_scrape_errors_total'), 1, 'the refused read is counted');
  t.equal(metric(m, 'mailbridge_queue_status_up'), 0);
  t.equal(metric(m, 'mailbridge_queue_messages{state="queued"}'), undefined, 'no numbers rather than made-up ones');
  const scrapeFailed = find('queue.scrape-failed') ?? '';
  t.match(scrapeFailed, /^<4>\{/);
  t.match(JSON.parse(scrapeFailed.slice(3)), { error: 'HTTP 401', hint: /check statusToken \/ statusTokenFile against the Worker's STATUS_TOKEN/ });
  t.ok(lines().every((l) => /^<[3467]>\{/.test(l)), 'every line has its priority');

  // Without JOURNAL_STREAM, or with one inherited that names another stream: plain JSON lines.
  for (const [name, extra] of [['absent', {}], ['inherited', { JOURNAL_STREAM: `${st.dev}:${st.ino}` }]] as const) {
    const plain = runAgent(env({ MAILBRIDGE_STATE_DIR: join(dir, name), ...extra }));
    t.teardown(() => { plain.child.kill('SIGKILL'); });
    await plain.waitEvent('connect.failed');
    t.ok(plain.out().split('\n').filter((l) => l !== '').every((l) => l.startsWith('{')), `JOURNAL_STREAM ${name}: no prefix`);
  }
});
