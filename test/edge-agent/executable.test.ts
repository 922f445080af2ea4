// dist/mailbridge-agent, the one-file agent (`npm run build:agent`), as a host without Node runs
// it: PATH leads nowhere, so the executable must carry its own Node, its flags and every module.
// Built once here unless dist/ holds one newer than every source it is made of (~20 s).
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PROTOCOL_VERSION } from '../../protocol/wire.ts';
import { AGENT_EXECUTABLE, buildExecutable } from '../../edge-agent/package/build.ts';
import { defaultReportingMta } from '../../edge-agent/agent-config.ts';
import { isStoredExactly } from '../helpers/mail.ts';
import { runAgent } from './agent-process.ts';
import { startLmtpPeer } from './lmtp-peer.ts';
import { header, msgId, push, scriptedObject, TOKEN } from './scripted-object.ts';
import { ciSkip } from '../helpers/skip.ts';
import { listenNotify } from '../helpers/notify-socket.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const NO_NODE = '/nonexistent';

function newest(paths: string[]): number {
  return Math.max(...paths.flatMap((p) => {
    const st = statSync(join(ROOT, p));
    return st.isDirectory() ? [newest(readdirSync(join(ROOT, p)).map((n) => join(p, n)))] : [st.mtimeMs];
  }));
}

async function executable(): Promise<string> {
  const sources = newest(['edge-agent', 'protocol', 'lmtp-proxy', 'package.json', 'package-lock.json']);
  let built = 0;
  try { built = statSync(AGENT_EXECUTABLE).mtimeMs; } catch { /* not built yet */ }
  return built > sources ? AGENT_EXECUTABLE : buildExecutable();
}

const exe = await executable();
const { version } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };

/** Runs the executable to its end with PATH leading nowhere. */
function once(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(exe, args, { env: { PATH: NO_NODE, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => { out += c.toString('utf8'); });
    child.stderr.on('data', (c: Buffer) => { err += c.toString('utf8'); });
    child.on('exit', (code) => resolve({ code, out, err }));
  });
}

t.test('--version names the package version, the protocol version and the Node inside', async (t) => {
  const r = await once(['--version']);
  t.equal(r.code, 0);
  t.equal(r.out, `mailbridge-agent ${version} (protocol ${PROTOCOL_VERSION}, node ${r.out.match(/node (v22\.\d+\.\d+)/)?.[1] ?? 'a Node 22'})\n`);
  t.equal(r.err, '', 'no experimental-feature warning');
});

t.test('--help tells where the settings come from and where the docs are', async (t) => {
  const r = await once(['--help']);
  t.equal(r.code, 0);
  t.match(r.out, /usage: mailbridge-agent \[--config <file>\]/);
  t.match(r.out, /default \/etc\/mailbridge\/agent\.json/);
  for (const v of ['MAILBRIDGE_WORKER_URL', 'MAILBRIDGE_TOKEN_FILE', 'MAILBRIDGE_HTTP', 'LoadCredential=token:']) t.match(r.out, v);
  t.match(r.out, /docs\/operations\.md/);
});

t.test('no Node on PATH and no token: exit 2 naming the settings to set', async (t) => {
  const r = await once([], { MAILBRIDGE_WORKER_URL: 'wss://relay.example.workers.dev/agent', MAILBRIDGE_STATE_DIR: t.testdir() });
  t.equal(r.code, 2);
  t.match(r.err, /^mailbridge-agent: MAILBRIDGE_TOKEN or MAILBRIDGE_TOKEN_FILE must be set \(or token\/tokenFile in \/etc\/mailbridge\/agent\.json/);
  t.equal(r.out, '', 'nothing started');
  const bad = await once(['--nope']);
  t.equal(bad.code, 2, 'an unknown option is a usage error too');
});

t.test('no Node on PATH: connects, delivers one message, logs its Subject, stops on SIGTERM with exit 0', async (t) => {
  const object = await scriptedObject(t);
  const peer = await startLmtpPeer('store');
  t.teardown(() => peer.close());
  const dir = t.testdir({ token: `${TOKEN}\n` });
  const config = join(dir, 'agent.json');
  await writeFile(config, JSON.stringify({
    workerUrl: object.url, tokenFile: join(dir, 'token'), target: peer.url, stateDir: join(dir, 'state'),
    name: 'dell', http: '127.0.0.1:0', logSubject: true,
  }));
  const conn = object.connection();
  const p = runAgent({ PATH: NO_NODE }, ['--config', config], { executable: exe });
  t.teardown(() => { p.child.kill('SIGKILL'); });
  const started = await p.waitEvent('agent.started');
  t.match(started, { version, config, reclaim: true }, '--expose-gc is baked in: garbage is reclaimed as messages pass');
  const c = await conn;
  t.equal(c.hello?.agent, 'dell', 'the hello names the agent');

  const body = Buffer.from('Subject: =?UTF-8?B?5pel5pys6Kqe?=\r\n\r\none message\r\n', 'latin1');
  const h = header(msgId(1), body, ['alice@example.test']);
  push(c, h, body);
  t.match(await c.next('ack'), { id: msgId(1), results: [{ recipient: 'alice@example.test', outcome: 'delivered' }] });
  t.equal(peer.stored.length, 1, 'one copy at the LMTP peer');
  t.ok(isStoredExactly(peer.stored[0], { agent: 'dell', id: h.id, authservId: defaultReportingMta(), at: h.receivedAt }, body), 'byte-exact: our two headers, then the message');
  const acked = await p.waitEvent('deliver.acked');
  t.equal(acked.subject, '日本語', 'mailparser is inside the executable');

  p.child.kill('SIGTERM');
  t.equal(await p.exit, 0, 'exit 0 after SIGTERM');
  t.same(p.events().map((e) => e.event).filter((e) => e.startsWith('agent.')), ['agent.started', 'agent.stopping', 'agent.stopped']);
  t.equal(p.err(), '', 'nothing on stderr');
});

/** The systemd-notify tool and python3 (a unix datagram listener: Node cannot bind one), or why not. */
function notifySkip(): string | false {
  for (const tool of ['systemd-notify', 'python3']) {
    try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); } catch { return ciSkip('systemd notify', `no ${tool} here (apt-get install systemd python3)`); }
  }
  return false;
}

t.test('under systemd (Type=notify, WatchdogSec=): READY=1 once running, WATCHDOG=1 pings, STOPPING=1 on SIGTERM', { skip: notifySkip() }, async (t) => {
  const object = await scriptedObject(t);
  const dir = t.testdir({ token: `${TOKEN}\n`, bin: {} });
  const { socket, got, until } = await listenNotify(t);
  // PATH holds systemd-notify and nothing else: still no Node.
  const tool = execFileSync('sh', ['-c', 'command -v systemd-notify'], { encoding: 'utf8' }).trim();
  await symlink(tool, join(dir, 'bin', 'systemd-notify'));

  const p = runAgent({
    PATH: join(dir, 'bin'), NOTIFY_SOCKET: socket, WATCHDOG_USEC: '2000000',
    MAILBRIDGE_WORKER_URL: object.url, MAILBRIDGE_TOKEN_FILE: join(dir, 'token'), MAILBRIDGE_STATE_DIR: join(dir, 'state'), MAILBRIDGE_HTTP: 'off',
  }, [], { executable: exe });
  t.teardown(() => { p.child.kill('SIGKILL'); });
  await until('READY=1', () => got().includes('READY=1'));
  await until('a watchdog ping (every WATCHDOG_USEC / 2)', () => got().includes('WATCHDOG=1'));
  p.child.kill('SIGTERM');
  t.equal(await p.exit, 0, 'exit 0 after SIGTERM');
  await until('STOPPING=1', () => got().includes('STOPPING=1'));
  const states = got().split('\n').filter((l) => l !== '' && l !== 'BARRIER=1');
  t.equal(states[0], 'READY=1', 'READY=1 comes first');
  t.ok(states.indexOf('STOPPING=1') > states.indexOf('WATCHDOG=1'), 'pings while running, then STOPPING=1');
  t.same(p.events().filter((e) => e.event === 'notify.failed'), [], 'every message reached the socket');
});
