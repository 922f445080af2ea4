// `npm run test:systemd [-- --watch-seconds N] [--packages <old.deb>,<new.deb>]`: the .deb
// (edge-agent/package/deb.ts) under a real systemd. This machine's / is booted read-only under
// an overlay (a tmpfs takes every write) with `systemd-nspawn --boot --register=no --keep-unit
// --private-network`; the units the host enables (dovecot, postfix, ...) are masked inside so
// that they do not start. Inside, as a
// new user following docs/operations.md section 3: apt installs the package; without a token the
// unit fails once, naming the file; a bad setting exits 2 and is not restarted; with a Worker
// that does not answer the agent stays active and feeds the watchdog; stop is quick and clean,
// and a stop with a delivery stuck takes the agent's grace, not TimeoutStopSec; a message goes
// from the Worker (relay.ts, in the container) through the unit into Dovecot; an upgrade keeps
// agent.json and the journal and restarts the agent; remove keeps them, purge deletes them.
// Where nspawn cannot boot it says "skipped" and exits 0; under CI a missing tool is a failure.
// --watch-seconds: how long the agent runs against the unanswering Worker (default 120, the
// issue's 2 min; WatchdogSec= is lowered to a quarter of it, at most 60, so pings are seen).
// --packages: test these two (the second a higher version) instead of building them.
// `npm test` runs it with a 20 s watch and no lintian (deb-under-systemd.test.ts, about 2
// minutes); this command's 2-minute watch took 4 to 6 minutes on the shared 2-core machine.
// With lintian installed it also lints the package (an error fails the run).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { AGENT_EXECUTABLE, buildExecutable } from '../../edge-agent/package/build.ts';
import { packageDeb } from '../../edge-agent/package/deb.ts';
import { AGENT_TOKEN } from '../helpers/worker.ts';
import { systemdMessage } from './message.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const UNIT = 'mailbridge-agent.service';
const DROPIN = `/etc/systemd/system/${UNIT}.d/test.conf`;

/** What the checks report to: tap's t, or the console (main below). */
export interface Check {
  ok(cond: unknown, msg: string, extra?: Record<string, unknown>): void;
  equal(found: unknown, wanted: unknown, msg: string): void;
  comment(msg: string): void;
}

export interface SuiteOptions {
  /** How long the agent runs against a Worker that does not answer (the issue: 2 min). */
  watchSeconds: number;
  /** Two built packages, the second a higher version, instead of building them here. */
  packages?: [string, string];
  /** Lint the first with lintian meanwhile: an error (E:) fails. */
  lint?: boolean;
}

interface Result { code: number; stdout: string; stderr: string }

function sh(cmd: string, args: string[], opts: { input?: string; cwd?: string } = {}): Promise<Result> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { maxBuffer: 64 << 20, cwd: opts.cwd ?? ROOT }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 127) : 0;
      resolve({ code, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined | false>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(250);
  }
}

/** A reason this machine cannot run the suite, or null; `missing` = a tool is absent (CI fails then). */
export async function cannotRun(): Promise<{ reason: string; missing: boolean } | null> {
  if (process.platform !== 'linux') return { reason: 'not Linux', missing: false };
  for (const tool of ['systemd-nspawn', 'nsenter', 'dpkg-deb', 'dpkg-shlibdeps', 'mount']) {
    if ((await sh('sh', ['-c', `command -v ${tool}`])).code !== 0) {
      return { reason: `no ${tool} (apt-get install systemd-container dpkg-dev)`, missing: true };
    }
  }
  if (process.getuid?.() !== 0) return { reason: 'not root: mounting the overlay and booting need root', missing: false };
  return null;
}

/** The executable: dist/'s if newer than every source it is made of, else built afresh into `dir`. */
async function executable(dir: string): Promise<string> {
  const newest = (paths: string[]): number => Math.max(...paths.flatMap((p) => {
    const st = statSync(join(ROOT, p));
    return st.isDirectory() ? [newest(readdirSync(join(ROOT, p)).map((n) => join(p, n)))] : [st.mtimeMs];
  }));
  const sources = newest(['edge-agent', 'protocol', 'lmtp-proxy', 'package.json', 'package-lock.json']);
  if (existsSync(AGENT_EXECUTABLE) && statSync(AGENT_EXECUTABLE).mtimeMs > sources) return AGENT_EXECUTABLE;
  // Not dist/: test/edge-agent/executable.test.ts may be building there at the same time.
  return buildExecutable(join(dir, 'mailbridge-agent'));
}

/** A booted container: its root as the host sees it (the overlay), and a way to run a command in it. */
interface Machine {
  root: string;
  run(args: string[], input?: string): Promise<Result>;
  spawn(args: string[]): ChildProcess;
  close(): Promise<void>;
}

async function boot(base: string): Promise<Machine | string> {
  await mount(['-t', 'tmpfs', 'tmpfs', base]);
  for (const d of ['upper', 'work', 'root']) await mkdir(join(base, d));
  const root = join(base, 'root');
  await mount(['-t', 'overlay', 'overlay', '-o', `lowerdir=/,upperdir=${join(base, 'upper')},workdir=${join(base, 'work')}`, root]);
  // What the host enables would start inside too (and a second Dovecot or Postfix on loopback).
  const etc = '/etc/systemd/system';
  for (const wants of readdirSync(etc).filter((d) => d.endsWith('.wants'))) {
    for (const unit of readdirSync(join(etc, wants)).filter((u) => /\.(service|timer|socket)$/.test(u) && !u.includes('@'))) {
      await rm(join(root, etc, unit), { force: true });
      await symlink('/dev/null', join(root, etc, unit));
    }
  }
  // A Docker-made image forbids starting services from maintainer scripts; a home server does not.
  await rm(join(root, 'usr/sbin/policy-rc.d'), { force: true });
  // The checkout, read-only at its own path: the relay inside runs from it, and a checkout under
  // /tmp (a CI clone) would otherwise be hidden by the container's own /tmp.
  const nspawn = spawn('systemd-nspawn', ['-D', root, '--boot', '--register=no', '--keep-unit', '--private-network', `--bind-ro=${ROOT.replace(/\/$/, '')}`, '-M', `mbtest${process.pid}`],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let console = '';
  nspawn.stdout.on('data', (c: Buffer) => { console += c.toString('utf8'); });
  nspawn.stderr.on('data', (c: Buffer) => { console += c.toString('utf8'); });
  const exited = new Promise<void>((r) => nspawn.on('exit', () => r()));
  const close = async (): Promise<void> => {
    if (nspawn.exitCode === null && nspawn.signalCode === null) {
      if (leader) await sh('nsenter', ['-t', String(leader), '-a', 'systemctl', 'poweroff']);
      if (!await Promise.race([exited.then(() => true), sleep(20_000).then(() => false)])) {
        nspawn.kill('SIGKILL');
        await exited;
      }
    }
    await sh('umount', ['-l', root]);
    await sh('umount', ['-l', base]);
  };
  let leader = 0;
  try {
    // The container's PID 1: nspawn's child named systemd (an intermediate child of nspawn's
    // may be there for a moment first), looked up again until systemd answers through it.
    const state = await until('systemctl is-system-running', 60_000, async () => {
      if (nspawn.exitCode !== null) throw new Error(`systemd-nspawn exited ${nspawn.exitCode}`);
      leader = Number((await sh('pgrep', ['-P', String(nspawn.pid), '-x', 'systemd'])).stdout.trim().split('\n')[0]) || 0;
      if (!leader) return undefined;
      const s = (await sh('nsenter', ['-t', String(leader), '-a', 'systemctl', 'is-system-running'])).stdout.trim();
      return s === 'running' || s === 'degraded' ? s : undefined;
    });
    if (state === 'degraded') process.stderr.write((await sh('nsenter', ['-t', String(leader), '-a', 'systemctl', '--failed', '--no-legend'])).stdout);
  } catch (err) {
    await close();
    return `systemd-nspawn cannot boot here: ${(err as Error).message}\n${console.slice(-2000)}`;
  }
  // Entering the mount namespace puts root and cwd at the container's /.
  const enter = ['-t', String(leader), '-a'];
  return {
    root,
    run: (args, input) => sh('nsenter', [...enter, ...args], input === undefined ? {} : { input }),
    spawn: (args) => spawn('nsenter', [...enter, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }),
    close,
  };
}

async function mount(args: string[]): Promise<void> {
  const r = await sh('mount', args);
  if (r.code !== 0) throw new Error(`mount ${args.join(' ')}: ${r.stderr.trim()}`);
}

/** The suite against a booted machine. */
async function suite(m: Machine, debs: { v1: string; v2: string; version1: string; version2: string }, c: Check, opts: SuiteOptions): Promise<void> {
  const run = (...args: string[]) => m.run(args);
  const bash = (script: string) => m.run(['sh', '-c', script]);
  const host = (p: string) => join(m.root, p);
  const show = async (): Promise<Record<string, string>> => {
    const r = await run('systemctl', 'show', UNIT, '-p', 'ActiveState,SubState,Result,NRestarts,ExecMainStatus,MainPID,WatchdogTimestampMonotonic,UnitFileState');
    return Object.fromEntries(r.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  };
  // The container's clock is the host's: entries are told apart by their time.
  let since = 0;
  /** The unit's journal since the last mark(): priority and message. */
  const journal = async (): Promise<Array<{ p: number; msg: string }>> => {
    const r = await run('journalctl', '-u', UNIT, '-o', 'json', '--no-pager');
    return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { PRIORITY: string; MESSAGE: unknown; __REALTIME_TIMESTAMP: string })
      .filter((e) => Number(e.__REALTIME_TIMESTAMP) >= since)
      .map((e) => ({ p: Number(e.PRIORITY), msg: Array.isArray(e.MESSAGE) ? Buffer.from(e.MESSAGE as number[]).toString('utf8') : String(e.MESSAGE) }));
  };
  const mark = async (): Promise<void> => { since = Date.now() * 1000; };
  const settings = (o: Record<string, unknown>) => writeFile(host('/etc/mailbridge/agent.json'), `${JSON.stringify(o, null, 2)}\n`);
  const dropin = async (lines: string[]): Promise<void> => {
    if (lines.length === 0) await rm(host(DROPIN), { force: true });
    else {
      await mkdir(host(`/etc/systemd/system/${UNIT}.d`), { recursive: true });
      await writeFile(host(DROPIN), `[Service]\n${lines.join('\n')}\n`);
    }
    await run('systemctl', 'daemon-reload');
  };
  const apt = (...args: string[]) => m.run(['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', '-y', '-q', '-o', 'Dpkg::Use-Pty=0', ...args]);
  /** RestartSec=5 and a little: time for a restart that must not come. */
  const noRestartWindow = () => sleep(7_000);

  // --- install, as docs/operations.md section 3 does
  const inst = await apt('install', debs.v1);
  c.equal(inst.code, 0, `apt install ./${debs.v1.split('/').pop()}`);
  if (inst.code !== 0) c.comment(inst.stdout + inst.stderr);
  c.ok((await run('id', '-u', 'mailbridge')).code === 0, 'the user mailbridge exists (systemd-sysusers)');
  c.equal((await run('stat', '-c', '%U %a', '/var/lib/mailbridge')).stdout.trim(), 'mailbridge 700', '/var/lib/mailbridge (systemd-tmpfiles)');
  const conffiles = (await run('dpkg-query', '-W', '-f', '${Conffiles}', 'mailbridge-agent')).stdout;
  c.ok(conffiles.includes('/etc/mailbridge/agent.json'), 'agent.json is a conffile', { conffiles });
  let st = await show();
  c.equal(`${st.UnitFileState} ${st.ActiveState}`, 'disabled inactive', 'neither enabled nor started before a token exists');
  const verify = await run('systemd-analyze', 'verify', `/lib/systemd/system/${UNIT}`);
  c.equal(verify.code, 0, `systemd-analyze verify of the installed unit (man page found) ${verify.stderr.trim()}`);
  const score = Number(/Overall exposure level for \S+: ([0-9.]+)/.exec((await run('systemd-analyze', 'security', UNIT)).stdout)?.[1]);
  c.ok(score <= 1.8, `systemd-analyze security: ${score}`);
  c.ok((await run('mailbridge-agent', '--version')).stdout.startsWith('mailbridge-agent '), 'mailbridge-agent --version');

  // --- no token: fails once, naming the file
  await mark();
  const first = await run('systemctl', 'enable', '--now', 'mailbridge-agent');
  c.ok(first.code !== 0, 'systemctl enable --now fails without a token');
  await noRestartWindow();
  st = await show();
  c.equal(`${st.ActiveState} ${st.ExecMainStatus} ${st.NRestarts}`, 'failed 2 0', 'failed once, exit 2, no restart');
  let j = await journal();
  c.ok(j.some((e) => e.p <= 3 && e.msg.includes('/etc/mailbridge/agent.token')), 'the journal names /etc/mailbridge/agent.token at priority err', { journal: j });
  c.equal(j.filter((e) => /^Starting /.test(e.msg)).length, 1, 'started once');

  // --- a bad setting: exit 2, not restarted
  await writeFile(host('/etc/mailbridge/agent.token'), `${AGENT_TOKEN}\n`, { mode: 0o600 });
  await settings({ workerUrl: 'ws://127.0.0.1:9/agent', concurrency: 0 });
  await run('systemctl', 'reset-failed', UNIT);
  await mark();
  c.ok((await run('systemctl', 'start', UNIT)).code !== 0, 'a bad setting: start fails');
  await noRestartWindow();
  st = await show();
  c.equal(`${st.ActiveState} ${st.ExecMainStatus} ${st.NRestarts}`, 'failed 2 0', 'exit 2, no restart');
  j = await journal();
  c.ok(j.some((e) => e.p <= 3 && e.msg.includes('/etc/mailbridge/agent.json: concurrency:')), 'the journal names the setting', { journal: j });

  // --- a Worker that does not answer: active, the watchdog fed
  const watchdog = Math.max(2, Math.min(60, Math.floor(opts.watchSeconds / 4)));
  c.comment(`watching the agent for ${opts.watchSeconds} s with WatchdogSec=${watchdog} (the unit says 60)`);
  await dropin([`WatchdogSec=${watchdog}`]);
  await settings({ workerUrl: 'ws://127.0.0.1:9/agent', name: 'nspawn', http: false });
  await run('systemctl', 'reset-failed', UNIT);
  await mark();
  c.equal((await run('systemctl', 'start', UNIT)).code, 0, 'starts (READY=1) though the Worker does not answer');
  const started = await show();
  await sleep(opts.watchSeconds * 1000);
  st = await show();
  c.equal(`${st.ActiveState} ${st.SubState} ${st.MainPID} ${st.NRestarts}`, `active running ${started.MainPID} 0`, `still the same process after ${opts.watchSeconds} s`);
  const fed = (Number(st.WatchdogTimestampMonotonic) - Number(started.WatchdogTimestampMonotonic)) / 1e6;
  c.ok(fed > opts.watchSeconds - watchdog, `the watchdog was fed all along (last ping ${fed.toFixed(1)} s after the first look)`);
  j = await journal();
  c.ok(j.some((e) => e.msg.includes('"connect.failed"')), 'connect.failed in the journal');
  c.ok(!j.some((e) => /[Ww]atchdog timeout/.test(e.msg)), 'no watchdog timeout');

  // --- stop: quick and clean
  let t0 = Date.now();
  await run('systemctl', 'stop', UNIT);
  const quick = Date.now() - t0;
  st = await show();
  c.ok(quick < 5_000, `systemctl stop took ${quick} ms`);
  c.equal(`${st.Result} ${st.ExecMainStatus}`, 'success 0', 'stopped cleanly: exit 0');
  c.ok((await journal()).some((e) => e.msg.includes('"agent.stopped"')), 'agent.stopped in the journal');
  await dropin([]);

  // --- one message end to end: the Worker and Dovecot in the container, Dovecot's socket as documented
  // Its own config: Debian's wants an SSL certificate that a fresh install may lack.
  await writeFile(host('/etc/dovecot/mailbridge-test.conf'), [
    '# test/systemd/run.ts: LMTP only, Maildir, system users by local part; the socket as docs/operations.md sets it.',
    'protocols = lmtp', 'ssl = no', 'mail_location = maildir:~/Maildir', 'mail_save_crlf = yes', 'auth_username_format = %Ln',
    'passdb {', '  driver = pam', '}', 'userdb {', '  driver = passwd', '}',
    'service lmtp {', '  unix_listener lmtp {', '    user = dovecot', '    group = mailbridge', '    mode = 0660', '  }', '}', '',
  ].join('\n'));
  await mkdir(host('/etc/systemd/system/dovecot.service.d'), { recursive: true });
  await writeFile(host('/etc/systemd/system/dovecot.service.d/test.conf'), '[Service]\nExecStart=\nExecStart=/usr/sbin/dovecot -F -c /etc/dovecot/mailbridge-test.conf\n');
  const dove = await bash('useradd -m alice && systemctl unmask dovecot.service && systemctl daemon-reload && systemctl start dovecot.service');
  c.equal(dove.code, 0, `Dovecot runs in the container ${dove.stderr.trim()}`);
  const relay = m.spawn(['sh', '-c', `cd ${ROOT} && exec ${process.execPath} --disable-warning=ExperimentalWarning test/systemd/relay.ts`]);
  let relayErr = '';
  relay.stderr?.on('data', (b: Buffer) => { relayErr += b.toString('utf8'); });
  const lines = createInterface({ input: relay.stdout! })[Symbol.asyncIterator]();
  const reply = async (): Promise<Record<string, unknown>> => {
    const r = await Promise.race([lines.next(), sleep(60_000).then(() => null)]);
    if (!r || r.done) throw new Error(`the relay said nothing: ${relayErr}`);
    return JSON.parse(r.value) as Record<string, unknown>;
  };
  const ask = async (cmd: string) => { relay.stdin?.write(`${cmd}\n`); return reply(); };
  try {
    const { agentUrl } = await reply();
    await settings({ workerUrl: agentUrl, name: 'nspawn', http: false });
    await mark();
    c.equal((await run('systemctl', 'start', UNIT)).code, 0, 'the agent starts against the local Worker');
    c.equal((await ask('post alice@example.test sd-1')).status, 200, 'the Worker takes a message');
    const maildir = host('/home/alice/Maildir');
    const stored = async (): Promise<Buffer[]> => {
      const out: Buffer[] = [];
      for (const sub of ['new', 'cur']) {
        const dir = join(maildir, sub);
        if (existsSync(dir)) for (const f of (await readdir(dir)).sort()) out.push(await readFile(join(dir, f)));
      }
      return out;
    };
    const [msg] = await until('the message in Dovecot', 60_000, async () => { const s = await stored(); return s.length > 0 ? s : undefined; });
    const sent = systemdMessage('sd-1');
    c.ok(msg?.includes('Received: from cloudflare-email-routing by nspawn (mailbridge)'), 'our trace header, naming the agent');
    c.ok(msg?.subarray(msg.length - sent.length).equals(sent), 'then the bytes sent, exactly');
    const empty = () => until('an empty queue', 30_000, async () => Object.values((await ask('summary')) as Record<string, number>).every((n) => n === 0) || undefined);
    await empty();
    const journaled = (): number => {
      const db = new DatabaseSync(host('/var/lib/mailbridge/journal.sqlite'), { readOnly: true });
      try { return Number((db.prepare("SELECT count(*) AS n FROM results WHERE recipient = 'alice@example.test'").get() as { n: number }).n); } finally { db.close(); }
    };
    c.equal(journaled(), 1, 'the delivery journal holds it');

    // --- a stop with a delivery stuck: the agent's grace rules, not TimeoutStopSec
    // TimeoutStopSec below the grace, yet not so low that a loaded machine's SIGKILL beats the
    // agent's STOPPING=1 message out (it goes through systemd-notify, a process of its own).
    await dropin(['TimeoutStopSec=4']);
    await settings({ workerUrl: agentUrl, name: 'nspawn', http: false, stopGraceMs: 8000 });
    await run('systemctl', 'restart', UNIT);
    await run('systemctl', 'kill', '-s', 'SIGSTOP', 'dovecot.service');
    await mark();
    c.equal((await ask('post alice@example.test sd-2')).status, 200, 'a second message, to a Dovecot that does not answer');
    await sleep(3_000); // the message reaches the agent, which waits for Dovecot's greeting
    t0 = Date.now();
    await run('systemctl', 'stop', UNIT);
    const slow = Date.now() - t0;
    st = await show();
    c.ok(slow > 7_000, `the stop took the agent's grace (8 s), not TimeoutStopSec=4: ${slow} ms`);
    c.equal(`${st.Result} ${st.ExecMainStatus}`, 'success 0', 'and ended with exit 0, not a SIGKILL');
    if (st.Result !== 'success') c.comment((await run('journalctl', '-b', '--no-pager', '-o', 'short-precise', '-n', '60')).stdout);
    await run('systemctl', 'kill', '-s', 'SIGCONT', 'dovecot.service');
    await dropin([]);
    await settings({ workerUrl: agentUrl, name: 'nspawn', http: false });
    await run('systemctl', 'start', UNIT);
    const both = await until('the handed-back message, delivered', 60_000, async () => { const s = await stored(); return s.length >= 2 ? s : undefined; });
    await empty();
    c.equal((await stored()).length, 2, 'each message stored once');
    c.ok(both.some((b) => b.includes('Subject: systemd sd-2')), 'the one handed back at the stop came again');

    // --- upgrade: agent.json and the journal stay, the agent restarts on the new package
    const before = await readFile(host('/etc/mailbridge/agent.json'), 'utf8');
    const pidBefore = (await show()).MainPID;
    const up = await apt('install', debs.v2);
    c.equal(up.code, 0, `apt install ./${debs.v2.split('/').pop()} (an upgrade)`);
    c.equal((await run('dpkg-query', '-W', '-f', '${Version}', 'mailbridge-agent')).stdout, debs.version2, 'the new version is installed');
    c.equal(await readFile(host('/etc/mailbridge/agent.json'), 'utf8'), before, 'agent.json as the admin left it');
    c.equal(journaled(), 2, 'the delivery journal kept');
    st = await show();
    c.ok(st.ActiveState === 'active' && st.MainPID !== pidBefore && st.MainPID !== '0', 'restarted on the new package', st);
    c.equal(st.UnitFileState, 'enabled', 'still enabled');

    // --- remove keeps the settings and the journal; purge deletes them
    c.equal((await apt('remove', 'mailbridge-agent')).code, 0, 'apt remove');
    st = await show();
    c.ok(st.ActiveState !== 'active', 'the agent is stopped');
    c.ok(!existsSync(host('/usr/bin/mailbridge-agent')), 'the executable is gone');
    c.ok(existsSync(host('/etc/mailbridge/agent.json')) && existsSync(host('/etc/mailbridge/agent.token')), 'agent.json and the token kept');
    c.ok(existsSync(host('/var/lib/mailbridge/journal.sqlite')), 'the journal kept');
    c.equal((await apt('purge', 'mailbridge-agent')).code, 0, 'apt purge');
    c.ok(!existsSync(host('/etc/mailbridge')), '/etc/mailbridge is gone');
    c.ok(!existsSync(host('/var/lib/mailbridge')), '/var/lib/mailbridge is gone');
    c.ok(!existsSync(host(`/etc/systemd/system/multi-user.target.wants/${UNIT}`)), 'the enable symlink is gone');
    c.ok((await run('dpkg', '-s', 'mailbridge-agent')).code !== 0, 'dpkg knows it no more');
  } finally {
    relay.stdin?.end();
    relay.kill();
  }
}

/** Builds the two packages, boots, runs the suite, tears down. Returns a skip reason, or null when it ran. */
export async function systemdSuite(c: Check, opts: SuiteOptions): Promise<string | null> {
  const why = await cannotRun();
  if (why) {
    if (why.missing && process.env.CI) throw new Error(`CI must run the systemd test: ${why.reason}`);
    return why.reason;
  }
  // /var/tmp, not /tmp: the container has a /tmp of its own, /var/tmp is this one's (the overlay's lower layer).
  const work = await mkdtemp('/var/tmp/mailbridge-systemd-');
  try {
    let t0 = Date.now();
    let [v1, v2] = opts.packages ?? ['', ''];
    if (!opts.packages) {
      const exe = await executable(work);
      const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
      // The upgrade: the same executable under a higher version, left uncompressed (quicker).
      [v1, v2] = await Promise.all([
        packageDeb({ executable: exe, outDir: work }),
        packageDeb({ executable: exe, outDir: join(work, 'v2'), version: `${version}+systemdtest1`, compress: 'none' }),
      ]);
      c.comment(`packages built in ${Date.now() - t0} ms`);
    }
    const versionOf = async (deb: string) => (await sh('dpkg-deb', ['-f', deb, 'Version'])).stdout.trim();
    const [version, version2] = [await versionOf(v1), await versionOf(v2)];
    // Slow (a minute or two: it reads the whole executable), so alongside the rest.
    const lint = opts.lint ? sh('lintian', [v1]) : null;
    const base = join(work, 'machine');
    await mkdir(base);
    t0 = Date.now();
    const m = await boot(base);
    if (typeof m === 'string') return m;
    c.comment(`booted in ${Date.now() - t0} ms`);
    try {
      await suite(m, { v1, v2, version1: version, version2 }, c, opts);
    } finally {
      await m.close();
    }
    if (lint) {
      const tags = (await lint).stdout.split('\n').filter((l) => /^[EW]: /.test(l));
      c.ok(!tags.some((l) => l.startsWith('E: ')), 'lintian: no error', { tags });
      for (const w of tags.filter((l) => l.startsWith('W: '))) c.comment(`lintian ${w}`);
    }
    return null;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { 'watch-seconds': { type: 'string', default: '120' }, packages: { type: 'string' } } });
  let failed = 0;
  let n = 0;
  const out = (ok: boolean, msg: string, extra?: unknown) => {
    n++;
    if (!ok) failed++;
    process.stdout.write(`${ok ? 'ok' : 'not ok'} ${n} - ${msg}\n${!ok && extra !== undefined ? `  ${JSON.stringify(extra)}\n` : ''}`);
  };
  const check: Check = {
    ok: (cond, msg, extra) => out(Boolean(cond), msg, extra),
    equal: (found, wanted, msg) => out(found === wanted, msg, { found, wanted }),
    comment: (msg) => process.stdout.write(`# ${msg}\n`),
  };
  const t0 = Date.now();
  const packages = values.packages?.split(',');
  const lint = (await sh('sh', ['-c', 'command -v lintian'])).code === 0;
  if (!lint) check.comment('lintian not installed: the package is not linted (apt-get install lintian)');
  const skipped = await systemdSuite(check, {
    watchSeconds: Number(values['watch-seconds']), lint,
    ...(packages?.length === 2 ? { packages: [packages[0] ?? '', packages[1] ?? ''] as [string, string] } : {}),
  });
  if (skipped) {
    process.stdout.write(`skipped: ${skipped}\n`);
    process.exit(0);
  }
  process.stdout.write(`# ${n - failed} passed, ${failed} failed in ${Math.round((Date.now() - t0) / 1000)} s\n`);
  process.exit(failed === 0 ? 0 : 1);
}
