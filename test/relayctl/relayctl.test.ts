// relayctl against the real Worker in workerd: every command run as a process (as an
// operator runs it), the --json shapes, the error messages and exit codes (the long
// lists of cases through the same main() in-process), and export byte for byte of an
// 8-bit/binary message spanning several chunks.
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { MessageFrame } from '../../protocol/wire.ts';
import { STATES } from '../../relayctl/api.ts';
import { main } from '../../relayctl/cli.ts';
import type { BlockOptions } from '../../local/email-routing.ts';
import { STAND_IN_BLOCK, splitBlock } from '../helpers/mail.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const MAIN = fileURLToPath(new URL('../../relayctl/main.ts', import.meta.url));
const ADMIN = 'admin-token-0123456789abcdef';
const LONG = String(10 * 60_000);  // main Worker: a deferred message stays deferred
const SHORT = 500;                 // dead-letter Worker: its retry backoff
// ... and its MAX_AGE_MS: a replayed message waits this long with no agent before it expires
// again (from the alarm): room for the checks after the replay, however slow the machine.
const DEAD_AGE = 60_000;
const NO_ID = 'f'.repeat(32);

let w: TestWorker;      // the main Worker
let dw: TestWorker;     // the dead-letter Worker
let dir: string;
let fake: Server;       // an HTTP server that is not the admin API
let fakeUrl: string;
let closedUrl: string;  // nothing listens here

t.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'relayctl-test-'));
  await writeFile(join(dir, 'token'), `${ADMIN}\n`);
  await writeFile(join(dir, 'wrong'), 'admin-token-wrong-0123456789\n');
  await writeFile(join(dir, 'empty'), '\n');
  [w, dw] = await Promise.all([
    startTestWorker({ vars: { ADMIN_TOKEN: ADMIN, RETRY_FIRST_MS: LONG, RETRY_MAX_MS: LONG, MAX_AGE_MS: LONG } }),
    startTestWorker({ vars: { ADMIN_TOKEN: ADMIN, RETRY_FIRST_MS: String(SHORT), RETRY_MAX_MS: String(SHORT), MAX_AGE_MS: String(DEAD_AGE) } }),
  ]);
  fake = createServer((req, res) => {
    const path = req.url ?? '/';
    if (path.startsWith('/html/')) res.writeHead(200, { 'Content-Type': 'text/html' }).end('<html>login</html>');
    else if (path.startsWith('/redirect/')) res.writeHead(301, { Location: 'https://elsewhere.test/' }).end();
    else if (path.startsWith('/shape/')) res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"states":{},"agents":[]}');
    else if (path.startsWith('/short-raw/')) {
      // A raw answer cut short: 5 bytes where 10 were announced.
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'X-Message-Size': '10', 'X-Message-Sha256': 'a'.repeat(64) }).end('12345');
    } else res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":"not found"}');  // a Worker without ADMIN_TOKEN
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
  fakeUrl = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`;
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  closedUrl = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
  await new Promise((r) => closed.close(r));
});
t.teardown(async () => {
  fake.close();
  await Promise.all([w.stop(), dw.stop()]);
  await rm(dir, { recursive: true, force: true });
});

interface Run { code: number | null; stdout: Buffer; out: string; err: string }
type Env = Record<string, string | undefined>;

/** The environment relayctl sees: RELAYCTL_URL/RELAYCTL_TOKEN_FILE for `worker`, unless `env` overrides them. */
function envFor(worker: TestWorker, env: Env): Env {
  const full: Env = { ...process.env };
  // Nothing of the caller's environment, nor tap's loader hooks, reaches relayctl.
  for (const k of Object.keys(full)) if (k.startsWith('RELAYCTL_') || k === 'NODE_OPTIONS') delete full[k];
  Object.assign(full, { RELAYCTL_URL: worker.rt.url.href, RELAYCTL_TOKEN_FILE: join(dir, 'token') }, env);
  for (const k of Object.keys(full)) if (full[k] === undefined) delete full[k];
  return full;
}

/** relayctl as an operator runs it: a process (`node relayctl/main.ts`), its exit code and output. */
function proc(args: string[], env: Env = {}, worker: TestWorker = w): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [MAIN, ...args], { env: envFor(worker, env), stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (b: Buffer) => out.push(b));
    p.stderr.on('data', (b: Buffer) => err.push(b));
    p.on('error', reject);
    p.on('close', (code) => {
      const stdout = Buffer.concat(out);
      resolve({ code, stdout, out: stdout.toString('utf8'), err: Buffer.concat(err).toString('utf8') });
    });
  });
}

/** The same command line through cli.ts's main() in this process: the same code without a
 * Node start per case (2 cores, other tests running); proc() runs prove the process wiring. */
async function cli(args: string[], env: Env = {}, worker: TestWorker = w): Promise<Run> {
  const sink = () => {
    const chunks: Buffer[] = [];
    const stream = new Writable({ write(chunk: Buffer, _enc, done) { chunks.push(Buffer.from(chunk)); done(); } });
    return { stream, text: () => Buffer.concat(chunks) };
  };
  const [o, e] = [sink(), sink()];
  const code = await main(args, { env: envFor(worker, env), stdout: o.stream, stderr: e.stream });
  return { code, stdout: o.text(), out: o.text().toString('utf8'), err: e.text().toString('utf8') };
}

/** Runs several at once, at most 3 at a time. */
async function all<const T extends readonly (() => Promise<Run>)[]>(runs: T): Promise<{ -readonly [K in keyof T]: Run }> {
  const results: Run[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: 3 }, async () => {
    for (let i = next++; i < runs.length; i = next++) {
      const run = runs[i];
      if (run) results[i] = await run();
    }
  }));
  return results as { -readonly [K in keyof T]: Run };
}

const parse = (r: Run): Record<string, unknown> => JSON.parse(r.out) as Record<string, unknown>;
const ids = (r: Run): string[] => (parse(r).messages as { id: string }[]).map((m) => m.id);

async function admin(worker: TestWorker, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(new URL(path, worker.rt.url), { headers: { Authorization: `Bearer ${ADMIN}` } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function eventually(what: string, check: () => Promise<boolean>, ms = 5000): Promise<void> {
  for (const until = Date.now() + ms; !(await check());) {
    if (Date.now() > until) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(25);
  }
}
const stateOf = async (worker: TestWorker, id: string) => (await admin(worker, `/admin/messages/${id}`)).body.state;

/** The message frame of attempt 1 of `id`, once its bytes have arrived (fetched from R2, or its chunks). */
const received = async (a: RawAgent, id: string): Promise<MessageFrame> => {
  await a.received(id);
  return a.messageFrame(id) as MessageFrame;
};
const tempfail = (a: RawAgent, m: MessageFrame) => a.send({
  type: 'ack', id: m.id, results: m.recipients.map((recipient) => ({ recipient, code: 451, enhanced: '4.3.0', text: 'busy', outcome: 'tempfail' as const })),
});
const permfail = (a: RawAgent, m: MessageFrame) => a.send({
  type: 'ack', id: m.id, results: m.recipients.map((recipient) => ({ recipient, code: 550, enhanced: '5.1.1', text: 'no such user', outcome: 'permfail' as const })),
});
async function connect(worker: TestWorker, name: string): Promise<RawAgent> {
  const a = new RawAgent(worker.agentUrl(), AGENT_TOKEN);
  await a.hello({ agent: name, window: 8, credit: 32 << 20, fetch: true });
  return a;
}
/** Small messages go without a Cloudflare block (their listed sizes are exact); M has one. */
async function post(worker: TestWorker, raw: Buffer, to = 'alice@example.test', block: BlockOptions | false = false): Promise<string> {
  const r = await worker.post('s@sender.test', to, raw, { block });
  if (r.status !== 200) throw new Error(`post: ${r.status} ${JSON.stringify(r.body)}`);
  return String(r.body.id);
}

// An 8-bit, binary message over three 1 MiB chunks: encoded words, raw UTF-8 and an
// escape sequence in the headers; every byte value, NUL, bare CR and bare LF in the body.
const every = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const BINARY = Buffer.concat([
  Buffer.from('From: =?iso-8859-1?Q?Andr=E9?= <andre@sender.test>\r\n'),
  Buffer.from('Subject: =?UTF-8?B?R3LDvMOfZQ==?= und\r\n =?UTF-8?Q?caf=C3=A9?=\r\n'),
  Buffer.from('X-Eight: caf'), Buffer.from([0xc3, 0xa9]), Buffer.from('\r\n'),
  Buffer.from('X-Latin: caf'), Buffer.from([0xe9]), Buffer.from('\r\n'),
  Buffer.from('X-Trick: a\x1b[31mred\r\n'),
  Buffer.from('Content-Type: application/octet-stream\r\n\r\n'),
  Buffer.alloc(2.5 * 1024 * 1024, every), Buffer.from('\r\n.\r\nbare\rcr\nlf\x00end'),
]);
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

let D1: string, D2: string, M: string;

t.test('usage errors: exit 2, message on stderr', async (t) => {
  const noUrl = { RELAYCTL_URL: undefined };
  const noToken = { RELAYCTL_TOKEN_FILE: undefined };
  const cases: [string[], Record<string, string | undefined>, RegExp][] = [
    [[], {}, /no command given/],
    [['bogus'], {}, /unknown command "bogus"/],
    [['toString'], {}, /unknown command "toString"/],
    [['--frobnicate', 'status'], {}, /Unknown option '--frobnicate'/],
    [['show'], {}, /show: which message/],
    [['show', 'not-an-id'], {}, /not a message id: "not-an-id"/],
    [['retry'], {}, /retry: which message/],
    [['retry', '--all', NO_ID], {}, /unexpected/],
    [['status', '--all'], {}, /status does not take --all/],
    [['queue', '--state', 'bogus'], {}, /--state must be one of incoming, queued/],
    [['queue', '--limit', '0'], {}, /--limit must be a whole number 1\.\.500/],
    [['queue', '--limit', '501'], {}, /--limit/],
    [['dead-letter'], {}, /dead-letter: list, replay <id> or purge <id>/],
    [['dead-letter', 'replay'], {}, /dead-letter replay: which message/],
    [['dead-letter', 'show', NO_ID], {}, /dead-letter: list, replay <id> or purge <id>/],
    [['dead-letter', 'purge', NO_ID, '--limit', '5'], {}, /dead-letter purge does not take --limit/],
    [['export', NO_ID, '--json'], {}, /--json does not apply/],
    [['status'], noUrl, /no Worker URL: give --url <url> or set RELAYCTL_URL/],
    [['status'], noToken, /no admin token/],
  ];
  const runs = await all(cases.map(([args, env]) => () => cli(args, env)));
  cases.forEach(([args, , msg], i) => {
    const r = runs[i];
    t.equal(r?.code, 2, `exit 2: relayctl ${args.join(' ')}`);
    t.match(r?.err, msg, `stderr: relayctl ${args.join(' ')}`);
    t.equal(r?.out, '', 'nothing on stdout');
  });
  // As a process: the exit code and stderr reach the shell.
  const [bare, help] = await all([() => proc([]), () => proc(['--help'], noUrl)]);
  t.equal(bare.code, 2, 'process: exit 2');
  t.match(bare.err, /^relayctl: no command given\n\(relayctl --help for usage\)\n$/);
  t.equal(bare.out, '');
  t.equal(help.code, 0);
  t.match(help.out, /^usage: relayctl/);
  t.match(help.out, /dead-letter purge <id>/);
});

t.test('bad URL, unreachable, not the admin API, bad token: exit 1 with a clear message', async (t) => {
  const cases: [Record<string, string | undefined>, RegExp][] = [
    [{ RELAYCTL_URL: 'not a url' }, /bad URL "not a url"/],
    [{ RELAYCTL_URL: 'ftp://127.0.0.1/' }, /only http: and https:/],
    [{ RELAYCTL_URL: 'http://me:pw@127.0.0.1/' }, /no credentials in the URL/],
    [{ RELAYCTL_URL: `${w.rt.url.href}admin` }, /without \/admin/],
    [{ RELAYCTL_URL: closedUrl }, /cannot reach http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/],
    [{ RELAYCTL_URL: fakeUrl }, /no admin API at .*\/admin\/queue \(404\).*ADMIN_TOKEN/],
    [{ RELAYCTL_URL: `${fakeUrl}/html/` }, /unexpected answer .*not JSON \("<html>login<\/html>"\)/],
    [{ RELAYCTL_URL: `${fakeUrl}/redirect/` }, /redirects to https:\/\/elsewhere\.test\/ \(HTTP 301\)/],
    [{ RELAYCTL_URL: `${fakeUrl}/shape/` }, /unexpected answer .*body\.states\.incoming: not a whole number/],
    [{ RELAYCTL_TOKEN_FILE: join(dir, 'wrong') }, /bad token: .* refused it \(401\)/],
    [{ RELAYCTL_TOKEN_FILE: join(dir, 'missing') }, /cannot read the token from RELAYCTL_TOKEN_FILE .*ENOENT/],
    [{ RELAYCTL_TOKEN_FILE: join(dir, 'empty') }, /token from RELAYCTL_TOKEN_FILE .* is empty/],
    [{ RELAYCTL_TOKEN_FILE: undefined, RELAYCTL_TOKEN: 'two words' }, /holds spaces/],
  ];
  const runs = await all(cases.map(([env]) => () => cli(['status'], env)));
  cases.forEach(([env, msg], i) => {
    const r = runs[i];
    t.equal(r?.code, 1, `exit 1: ${JSON.stringify(env)}`);
    t.match(r?.err, msg, `stderr: ${JSON.stringify(env)}`);
    t.equal(r?.out, '');
  });

  // Where the token comes from: --token-file, then RELAYCTL_TOKEN, then RELAYCTL_TOKEN_FILE.
  const [flag, envToken, flagWins] = await all([
    () => cli(['--url', w.rt.url.href, '--token-file', join(dir, 'token'), 'status'], { RELAYCTL_URL: undefined, RELAYCTL_TOKEN_FILE: undefined }),
    () => cli(['status'], { RELAYCTL_TOKEN_FILE: join(dir, 'wrong'), RELAYCTL_TOKEN: ADMIN }),
    () => cli(['--token-file', join(dir, 'wrong'), 'status'], { RELAYCTL_TOKEN: ADMIN }),
  ]);
  t.equal(flag.code, 0, '--url and --token-file');
  t.equal(envToken.code, 0, 'RELAYCTL_TOKEN before RELAYCTL_TOKEN_FILE');
  t.equal(flagWins.code, 1, '--token-file before RELAYCTL_TOKEN');

  // As a process: exit 1 and one clear line on stderr.
  const [down, badToken] = await all([
    () => proc(['status'], { RELAYCTL_URL: closedUrl }),
    () => proc(['queue'], { RELAYCTL_TOKEN_FILE: join(dir, 'wrong') }),
  ]);
  t.equal(down.code, 1, 'process: unreachable');
  t.match(down.err, /^relayctl: cannot reach http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED.*\n$/);
  t.equal(badToken.code, 1, 'process: bad token');
  t.match(badToken.err, /^relayctl: bad token: http:\/\/127\.0\.0\.1:\d+ refused it \(401\); the token must be the Worker's ADMIN_TOKEN\n$/);

  const cut = await cli(['export', NO_ID], { RELAYCTL_URL: `${fakeUrl}/short-raw/` });
  t.equal(cut.code, 1, 'an export cut short fails');
  t.match(cut.err, /export of f+ is incomplete or damaged: got 5 bytes .* the queue holds 10 bytes/);
});

t.test('status with an agent; queue, show and export of an 8-bit binary message', async (t) => {
  const a = await connect(w, 'relayctl-agent');
  D1 = await post(w, Buffer.from('Subject: D1\r\n\r\nd1\r\n'));
  D2 = await post(w, Buffer.from('Subject: D2\r\n\r\nd2\r\n'));
  tempfail(a, await received(a, D1));
  tempfail(a, await received(a, D2));
  await eventually('D1, D2 deferred', async () => (await stateOf(w, D1)) === 'deferred' && (await stateOf(w, D2)) === 'deferred');

  const online = await proc(['status', '--json']);
  t.equal(online.code, 0);
  t.match(parse(online), { agents: [{ agent: 'relayctl-agent', session: String }] });
  a.close();
  await a.closed;
  await eventually('agent gone', async () => ((await admin(w, '/admin/queue')).body.agents as unknown[]).length === 0);

  M = await post(w, BINARY, 'alice@example.test', {});
  const [status, statusJson, queue, queueJson, deferred, limited, show, showJson, exported] = await all([
    () => cli(['status']),
    () => cli(['status', '--json']),
    () => proc(['queue']),
    () => cli(['queue', '--json']),
    () => cli(['queue', '--state', 'deferred', '--json']),
    () => cli(['queue', '--limit', '1']),
    () => proc(['show', M]),
    () => cli(['show', M.toUpperCase(), '--json']),
    () => proc(['export', M]),
  ]);

  t.equal(status.code, 0);
  t.match(status.out, /^agents\s+0 connected$/m);
  t.match(status.out, /^queued\s+1  \(2\.5 MiB, 2\.5 MiB in R2\)$/m, 'each state with the bytes it keeps');
  t.match(status.out, /^deferred\s+2  \(\d+ B, \d+ B in R2\)$/m);
  for (const st of ['hold', 'bouncing', 'bounced', 'dead-letter', 'in-flight', 'incoming']) t.match(status.out, new RegExp(`^${st}\\s+0$`, 'm'), `${st} shown`);
  t.match(status.out, /^total\s+3$/m);
  t.match(status.out, /^oldest\s+\d+s old \(received \d{4}-\d\d-\d\dT.*; oldest still owed\)$/m);
  t.match(status.out, /^storage\s+object \d.* of 4\.7 GiB \(0 %\), R2 2\.5 MiB of 9\.3 GiB \(0 %\)$/m);

  const s = parse(statusJson);
  t.same(Object.keys(s).sort(), ['agents', 'oldest', 'oldestAgeMs', 'states', 'storage', 'stored', 'total', 'url']);
  t.match(s.stored, { queued: { bodies: 1, bytes: Number, r2Bytes: BINARY.length }, deferred: { bodies: 2 }, hold: { bodies: 0, bytes: 0, r2Bytes: 0 } });
  t.match(s.storage, { objectBytes: Number, objectLimitBytes: 5_000_000_000, r2LimitBytes: 10_000_000_000, warnPercent: 80 });
  t.same(s.states, { incoming: 0, queued: 1, 'in-flight': 0, deferred: 2, hold: 0, bouncing: 0, bounced: 0, 'dead-letter': 0 });
  t.same(s.agents, []);
  t.equal(s.total, 3);
  t.equal(s.url, w.rt.url.href);
  t.type(s.oldest, 'number');
  t.ok(typeof s.oldestAgeMs === 'number' && s.oldestAgeMs >= 0 && s.oldestAgeMs < 60_000, 'oldest age in ms');

  t.equal(queue.code, 0);
  const lines = queue.out.trimEnd().split('\n');
  t.match(lines[0], /^ID\s+STATE\s+SIZE\s+AGE\s+ATT\s+SENDER\s+RECIPIENTS\s+LAST ERROR$/);
  t.match(lines[1], new RegExp(`^${D1}\\s+deferred\\s+\\d+ B\\s+\\d+s\\s+1\\s+s@sender\\.test\\s+alice@example\\.test\\s+alice@example\\.test: 451 busy$`));
  t.match(lines[3], new RegExp(`^${M}\\s+queued\\s+2\\.5 MiB\\s+\\d+s\\s+0\\s+s@sender\\.test\\s+alice@example\\.test\\s+-$`));
  t.match(lines[4], /^-- 3 messages, 2\.5 MiB$/);

  t.same(ids(queueJson), [D1, D2, M], 'oldest first');
  const m = (parse(queueJson).messages as Record<string, unknown>[])[2];
  t.same(Object.keys(m ?? {}).sort(), ['attempts', 'bodyKey', 'bounceStatus', 'chunks', 'failure', 'id', 'lastError', 'leaseSession', 'md5', 'nextAttemptAt', 'prefix', 'receivedAt', 'recipients', 'results', 'retryFrom', 'sender', 'settledAt', 'sha256', 'size', 'state']);
  // M came under the stand-in's Cloudflare block: the block in its row, the sender's bytes in R2 with R2's MD5 of them.
  const prefix = Number(m?.prefix);
  t.ok(prefix > 0, 'M has a Cloudflare block');
  t.match(m, { id: M, state: 'queued', sender: 's@sender.test', recipients: ['alice@example.test'], results: [], size: prefix + BINARY.length, sha256: '', bodyKey: `queue/${M}`, md5: md5(BINARY), chunks: 0, attempts: 0, lastError: null });
  t.same(ids(deferred), [D1, D2]);
  t.match(limited.out, /^-- 1 message, \d+ B \(the first 1; --limit up to 500\)$/m);

  t.equal(show.code, 0);
  t.match(show.out, new RegExp(`^id\\s+${M}$`, 'm'));
  t.match(show.out, /^state\s+queued$/m);
  t.match(show.out, new RegExp(`^size\\s+2\\.5 MiB \\(${prefix + BINARY.length} bytes; body in R2 as queue/${M}\\)$`, 'm'));
  t.match(show.out, new RegExp(`^md5\\s+${md5(BINARY)}$`, 'm'));
  t.match(show.out, /^attempts\s+0$/m);
  t.match(show.out, /^ {2}From: André <andre@sender\.test>$/m, 'encoded word (ISO-8859-1) decoded');
  t.match(show.out, /^ {2}Subject: Grüße und café$/m, 'encoded words (UTF-8, B and Q, folded) decoded');
  t.match(show.out, /^ {2}X-Eight: café$/m, '8-bit UTF-8 shown');
  t.match(show.out, /^ {2}X-Trick: a\\x1b\[31mred$/m, 'no raw escape reaches the terminal');
  t.notMatch(show.out, /\x1b/);

  const detail = parse(showJson);
  t.match(detail, { id: M, state: 'queued', size: prefix + BINARY.length, md5: md5(BINARY) });
  t.same((detail.headers as { name: string }[]).slice(0, 4).map((h) => h.name), ['Received', 'ARC-Seal', 'ARC-Message-Signature', 'ARC-Authentication-Results'], 'Cloudflare\'s fields first');
  t.same((detail.headers as unknown[]).slice(-6), [
    { name: 'From', value: 'André <andre@sender.test>' },
    { name: 'Subject', value: 'Grüße und café' },
    { name: 'X-Eight', value: 'café' },
    { name: 'X-Latin', value: 'caf\ufffd' },
    { name: 'X-Trick', value: 'a\x1b[31mred' },
    { name: 'Content-Type', value: 'application/octet-stream' },
  ], 'JSON: the decoded fields, in order');

  t.equal(exported.code, 0, exported.err);
  t.equal(exported.err, '');
  t.equal(exported.stdout.length, prefix + BINARY.length);
  const out = splitBlock(exported.stdout);
  t.match(out.block.toString('latin1'), STAND_IN_BLOCK, 'export: the block as Email Routing handed it over');
  t.ok(out.rest.equals(BINARY), 'export is byte-exact, checked against R2\'s MD5 after the prefix');

  const [showNone, exportNone] = await all([() => proc(['show', NO_ID]), () => cli(['export', NO_ID])]);
  for (const r of [showNone, exportNone]) {
    t.equal(r.code, 1);
    t.match(r.err, new RegExp(`no message ${NO_ID} in the queue`));
    t.equal(r.out, '');
  }
});

t.test('retry one, retry --all, and retries that do not apply', async (t) => {
  const [notDeferred, unknown, purgeLive] = await all([
    () => cli(['retry', M]),
    () => cli(['retry', NO_ID]),
    () => cli(['dead-letter', 'purge', D1]),
  ]);
  t.equal(notDeferred.code, 1);
  t.match(notDeferred.err, new RegExp(`cannot retry ${M}: it is queued, not deferred \\(it is already waiting for an agent\\)`));
  t.equal(unknown.code, 1);
  t.match(unknown.err, /no message f+ in the queue/);
  t.equal(purgeLive.code, 1);
  t.match(purgeLive.err, new RegExp(`cannot purge ${D1}: it is deferred, not dead-letter`));
  t.equal(await stateOf(w, D1), 'deferred', 'a failed purge leaves it');

  const one = await proc(['retry', D1]);
  t.equal(one.code, 0, one.err);
  t.equal(one.out, `${D1}: deferred -> queued\n`);
  t.equal(await stateOf(w, D1), 'queued');
  const again = await proc(['retry', D1, '--json']);
  t.equal(again.code, 1);
  t.match(again.err, /it is queued, not deferred/);

  const rest = await proc(['retry', '--all', '--json']);
  t.equal(rest.code, 0, rest.err);
  t.same(parse(rest), { retried: [D2], skipped: [] });
  t.equal(await stateOf(w, D2), 'queued');
  const none = await cli(['retry', '--all']);
  t.equal(none.code, 0);
  t.equal(none.out, 'retried 0 deferred messages\n');
});

t.test('dead-letter list, show, replay, purge', async (t) => {
  const a = await connect(dw, 'dl-agent');
  const X1 = await post(dw, Buffer.from('Subject: X1\r\n\r\nx1\r\n'));
  const X2 = await post(dw, Buffer.from('Subject: X2\r\n\r\nx2\r\n'), 'bob@example.test');
  const [m1, m2] = [await received(a, X1), await received(a, X2)];
  // Refused for good, and this agent has no bounce relay: dead-letter.
  permfail(a, m1);
  permfail(a, m2);
  await eventually('X1, X2 dead', async () => (await stateOf(dw, X1)) === 'dead-letter' && (await stateOf(dw, X2)) === 'dead-letter');
  a.close();
  await a.closed;

  const run = (args: string[], via = cli) => () => via(args, {}, dw);
  const [list, listJson, show, replayUnknown] = await all([
    run(['dead-letter', 'list'], proc), run(['dead-letter', 'list', '--json']), run(['show', X1]), run(['dead-letter', 'replay', M]),
  ]);
  const lines = list.out.trimEnd().split('\n');
  t.match(lines[0], /^ID\s+SIZE\s+AGE\s+ATT\s+SENDER\s+RECIPIENTS\s+LAST ERROR$/, 'no STATE column');
  t.match(lines[1], new RegExp(`^${X1}\\s+\\d+ B\\s+\\d+s\\s+1\\s+s@sender\\.test\\s+-\\s+alice@example\\.test: 550 no such user$`));
  t.match(lines[2], new RegExp(`^${X2}\\s.*bob@example\\.test`));
  t.equal(lines[3], '-- 2 messages, 38 B');
  t.same(ids(listJson), [X1, X2]);
  t.match(parse(listJson).messages, [{ state: 'dead-letter', results: [{ recipient: 'alice@example.test', code: 550, enhanced: '5.1.1', text: 'no such user', outcome: 'permfail' }] }]);
  t.match(show.out, /^state\s+dead-letter$/m);
  t.match(show.out, /^replies\n {2}RECIPIENT\s+OUTCOME\s+CODE\s+ENHANCED\s+TEXT\n {2}alice@example\.test\s+permfail\s+550\s+5\.1\.1\s+no such user$/m);
  t.match(show.out, /^ {2}Subject: X1$/m);
  t.equal(replayUnknown.code, 1, 'M is not on this Worker: 409, then 404 on a look');
  t.match(replayUnknown.err, /no message/);

  const replay = await run(['dead-letter', 'replay', X1], proc)();
  t.equal(replay.code, 0, replay.err);
  const X1as = /-> queued as ([0-9a-f]{32}) /.exec(replay.out)?.[1] ?? '';
  t.equal(replay.out, `${X1}: dead-letter -> queued as ${X1as} (fresh retry clock)\n`, 'under a new id');
  const [replayAgain, purgeQueued, purge] = await all([
    run(['dead-letter', 'replay', X1as]), run(['dead-letter', 'purge', X1as]), run(['dead-letter', 'purge', X2, '--json'], proc),
  ]);
  t.equal(replayAgain.code, 1);
  t.match(replayAgain.err, new RegExp(`cannot replay ${X1as}: it is queued, not dead-letter`));
  t.equal(purgeQueued.code, 1);
  t.match(purgeQueued.err, /cannot purge .*: it is queued, not dead-letter/);
  t.equal(purge.code, 0, purge.err);
  t.same(parse(purge), { id: X2, purged: true });

  const [gone, status, deadAfter, replayed] = await all([
    run(['show', X2]), run(['status', '--json']), run(['dead-letter', 'list', '--json']), run(['show', X1as]),
  ]);
  t.equal(gone.code, 1);
  t.match(gone.err, /no message/);
  t.match(parse(status).states, { queued: 1, 'dead-letter': 0 });
  t.same(ids(deadAfter), []);
  t.match(replayed.out, /^state\s+queued$/m);
  t.match(replayed.out, /^retry clock\s+since \d{4}-.*\(replayed from dead-letter\)$/m, 'a fresh retry clock');
  t.equal((await run(['dead-letter', 'list'])()).out, 'no dead-lettered messages\n');
  t.match(replayed.out, /^pending\s+alice@example\.test$/m, 'the refused recipient is owed again');
});

t.test("relayctl's list of states is the Worker's", async (t) => {
  const r = await admin(w, '/admin/messages?state=bogus');
  t.equal(r.status, 400);
  t.equal(r.body.error, `state must be one of ${STATES.join(', ')}`);
});
