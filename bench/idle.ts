// `npm run bench:idle [-- --seconds N]`: idle means idle (#16.5). Starts `npm start` as a user
// would (temp DATA_DIR, SMTP_PORT=0, LOG_LEVEL=debug so the Worker's lines are printed too,
// its own Maildir LMTP target as RELAY_TARGET), sends mail, stops the target while mail is
// waiting and starts it again, lets the queue drain, and then measures N seconds (default 60)
// of nothing to do: CPU time of the agent's process (node local/main.ts: agent, ingress,
// Miniflare's host), of workerd, and of the whole npm start tree, from /proc/<pid>/stat
// (utime+stime, children reaped included), and the log lines written meanwhile.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { LmtpClient } from '../lmtp-proxy/client.ts';
import { startMaildirTarget, type MaildirTarget } from '../local/maildir-target.ts';
import { childrenNamed, clockTicks, spawnChild, treeCpu, treePids } from './lib/proc.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '60' } } });
const seconds = Number(values.seconds);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const say = (s: string) => process.stdout.write(`${new Date().toISOString()} ${s}\n`);

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  yield b;
}

async function send(port: number, n: number): Promise<void> {
  const c = new LmtpClient({ protocol: 'smtp', host: '127.0.0.1', port }, { localName: 'bench.idle' });
  try {
    const raw = Buffer.from(`Subject: idle ${n}\r\nMessage-ID: <idle-${n}-${Date.now()}@bench>\r\n\r\nbefore the quiet\r\n`, 'latin1');
    const [r] = await c.deliver({ sender: 'bench@example.net', recipients: ['alice@example.test'] }, once(raw), { size: raw.byteLength });
    if (r?.outcome !== 'delivered') throw new Error(`ingress refused message ${n}: ${r?.code} ${r?.text}`);
  } finally {
    await c.close();
  }
}

async function stored(root: string): Promise<number> {
  return (await readdir(join(root, 'alice@example.test', 'new')).catch(() => [])).length;
}

async function waitStored(root: string, n: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while ((await stored(root)) < n) {
    if (Date.now() > until) throw new Error(`only ${await stored(root)} of ${n} messages stored within ${ms} ms`);
    await sleep(200);
  }
}

const dir = await mkdtemp(join(tmpdir(), 'mailbridge-idle-'));
const root = join(dir, 'maildir');
let target: MaildirTarget = await startMaildirTarget({ root });
const env: Record<string, string> = {
  HOME: process.env.HOME ?? dir, DATA_DIR: join(dir, 'data'), SMTP_PORT: '0', RELAY_TARGET: target.url,
  LOG_LEVEL: 'debug', RETRY_FIRST_MS: '1000', RETRY_MAX_MS: '2000',
};
const npm = spawnChild('npm', ['start'], env, ROOT);
let lines = 0;
npm.onLine(() => { lines++; });
try {
  const banner = await npm.waitLine((l) => l.includes('SMTP ingress'), 60_000, 'the start banner');
  const smtp = Number(/:(\d+)\s*$/.exec(banner)?.[1]);
  say(`npm start is up (SMTP ${smtp}); 3 messages`);
  for (let i = 1; i <= 3; i++) await send(smtp, i);
  await waitStored(root, 3, 30_000);
  say('target down; 3 more messages wait in the queue');
  const port = target.port;
  await target.close();
  for (let i = 4; i <= 6; i++) await send(smtp, i);
  await sleep(4_000);
  target = await startMaildirTarget({ root, port });
  say('target up again');
  await waitStored(root, 6, 60_000);
  say('all 6 stored; 5 s to settle, then the idle measurement');
  await sleep(5_000);

  const main = childrenNamed(npm.pid, 'node')[0] ?? npm.pid;
  // Miniflare starts workerd as a child of the main process; the agent's row leaves it out.
  const workerd = treePids(main).filter((p) => p !== main);
  const parts = { agent: [main], workerd };
  const before = { ...treeCpu(parts), ...treeCpu({ 'npm start (all)': [npm.pid] }) };
  const linesBefore = lines;
  await sleep(seconds * 1000);
  const after = { ...treeCpu(parts), ...treeCpu({ 'npm start (all)': [npm.pid] }) };
  const logLines = lines - linesBefore;
  const perMinute = 60 / seconds;
  const rows = Object.keys(after).map((k) => [k, (((after[k] ?? 0) - (before[k] ?? 0)) * 1000 * perMinute).toFixed(0)]);
  process.stdout.write(`\nidle for ${seconds} s after a target outage (CLK_TCK ${clockTicks()}, so 10 ms steps)\n`);
  process.stdout.write(`${'process'.padEnd(40)} CPU ms per minute\n`);
  const names: Record<string, string> = { agent: `agent: node local/main.ts (pid ${main})`, workerd: `workerd (pids ${workerd.join(' ')})` };
  for (const [k, v] of rows) process.stdout.write(`${(names[k ?? ''] ?? k ?? '').padEnd(40)} ${v}\n`);
  process.stdout.write(`log lines written while idle: ${logLines} (${(logLines * perMinute).toFixed(0)} per minute)\n`);
} finally {
  await npm.stop('SIGTERM', 30_000);
  await target.close();
  await rm(dir, { recursive: true, force: true });
}
