// `npm start` as a process: a bad setting or a port in use exits 2 at once, before
// workerd starts; a good setting reaches the Worker; SIGTERM to npm leaves no process
// behind. Every process a run starts inherits a marker variable, so "left behind" is
// checked in /proc without mistaking other runs' workerd for ours.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { message, sendSmtp } from '../helpers/mail.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MARK = 'MB_TEST_RUN';

interface Run { p: ChildProcess; mark: string; out: () => string; err: () => string; exit: Promise<number | null> }

/** local/main.ts as `npm start` runs it (or `npm start` itself), with `env` on top of a clean environment. */
async function start(env: Record<string, string>, viaNpm = false): Promise<Run> {
  const full: Record<string, string | undefined> = { ...process.env };
  // Neither tap's loader hooks nor a developer's own settings reach the relay.
  for (const k of Object.keys(full)) if (k === 'NODE_OPTIONS' || k.startsWith('MAILBRIDGE_') || k.startsWith('TAP')) delete full[k];
  const dataDir = await mkdtemp(join(tmpdir(), 'mailbridge-start-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const mark = randomBytes(8).toString('hex');
  Object.assign(full, { DATA_DIR: dataDir, SMTP_PORT: '0', [MARK]: mark }, env);
  const args = viaNpm ? ['npm', ['start', '--silent']] as const
    : [process.execPath, ['--expose-gc', '--disable-warning=ExperimentalWarning', 'local/main.ts']] as const;
  const p = spawn(args[0], args[1], { cwd: ROOT, env: full, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout?.on('data', (b: Buffer) => { out += b.toString('utf8'); });
  p.stderr?.on('data', (b: Buffer) => { err += b.toString('utf8'); });
  const exit = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
  t.teardown(() => { if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL'); });
  return { p, mark, out: () => out, err: () => err, exit };
}

/** Pids of the live processes carrying this run's marker (npm, node, esbuild, workerd). */
async function marked(mark: string): Promise<{ pid: number; cmd: string }[]> {
  const found: { pid: number; cmd: string }[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(name)) continue;
    try {
      const env = await readFile(`/proc/${name}/environ`, 'latin1');
      if (!env.split('\0').includes(`${MARK}=${mark}`)) continue;
      const stat = await readFile(`/proc/${name}/stat`, 'latin1');
      if (/^\d+ \(.*\) Z /.test(stat)) continue; // a zombie has exited
      found.push({ pid: Number(name), cmd: (await readFile(`/proc/${name}/cmdline`, 'latin1')).split('\0').join(' ') });
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

async function until<T>(what: string, f: () => Promise<T | null> | T | null, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== null) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const running = (r: Run) => until('the relay to run', () => {
  if (r.p.exitCode !== null) throw new Error(`exited ${r.p.exitCode}: ${r.err()}`);
  const m = /SMTP ingress +smtp:\/\/127\.0\.0\.1:([0-9]+)/.exec(r.out());
  return m ? Number(m[1]) : null;
});

async function exitsQuickly(t: Test, env: Record<string, string>, name: RegExp): Promise<Run> {
  const r = await start(env);
  // A bound, not a timing goal: on a loaded machine Node alone takes seconds to start.
  const code = await Promise.race([r.exit, new Promise<'slow'>((res) => setTimeout(() => res('slow'), 60_000))]);
  t.equal(code, 2, 'exit 2');
  t.match(r.err(), name, 'stderr names it');
  t.notMatch(r.out(), /Worker \(local\)/, 'refused before the Worker runtime was started');
  t.same(await marked(r.mark), [], 'no process of it left (workerd never started)');
  return r;
}

t.test('a malformed VERDICT_WAIT_MS: exit 2, naming it', (t) => exitsQuickly(t, { VERDICT_WAIT_MS: 'soon' }, /^mailbridge: VERDICT_WAIT_MS: must be an integer/m));

t.test('an unknown MAILBRIDGE_FOO: exit 2, naming it', (t) => exitsQuickly(t, { MAILBRIDGE_FOO: '1' }, /^mailbridge: MAILBRIDGE_FOO: unknown variable/m));

t.test('a near miss of a Worker var: exit 2 with the likely name', (t) => exitsQuickly(t, { RETRY_FIRTS_MS: '1000' }, /RETRY_FIRTS_MS: unknown variable; did you mean RETRY_FIRST_MS\?/));

t.test('SMTP_PORT in use: exit 2 at once, before workerd starts', async (t) => {
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
  t.teardown(() => taken.close());
  const port = (taken.address() as AddressInfo).port;
  await exitsQuickly(t, { SMTP_PORT: String(port) }, new RegExp(`^mailbridge: SMTP_PORT: 127\\.0\\.0\\.1:${port} is already in use`, 'm'));
});

t.test('ALLOWED_RECIPIENTS and MAX_MESSAGE_BYTES reach the Worker and the ingress', async (t) => {
  const r = await start({ ALLOWED_RECIPIENTS: 'alice@example.test', MAX_MESSAGE_BYTES: '65536' });
  const port = await running(r);
  const small = message({ Subject: 'settings' }, Buffer.from('hi\r\n'));
  const [bob] = await sendSmtp(port, 's@example.net', ['bob@example.test'], small);
  t.equal(bob?.code, 550, 'another address of the domain is refused by the Worker');
  t.match(bob?.text, /5\.1\.1/);
  const [alice] = await sendSmtp(port, 's@example.net', ['alice@example.test'], small);
  t.equal(alice?.code, 250, 'the allowed one is accepted');
  const [big] = await sendSmtp(port, 's@example.net', ['alice@example.test'], Buffer.alloc(100 * 1024, 'a'), { declareSize: false });
  t.equal(big?.code, 552, 'a message over MAX_MESSAGE_BYTES is refused');
  r.p.kill('SIGTERM');
  t.equal(await r.exit, 0, 'SIGTERM: stops and exits 0');
});

t.test('SIGTERM to npm stops node, esbuild and workerd: nothing left behind', async (t) => {
  const r = await start({}, true);
  await running(r);
  const before = await marked(r.mark);
  t.ok(before.some((p) => /workerd/.test(p.cmd)), `workerd runs (${before.length} processes)`);
  t.ok(before.some((p) => /local\/main\.ts/.test(p.cmd)), 'node runs');
  r.p.kill('SIGTERM');
  await r.exit;
  const left = await until('every process to end', async () => {
    const now = await marked(r.mark);
    return now.length === 0 ? now : null;
  }, 20_000).catch(() => marked(r.mark));
  t.same(left, [], 'no process of the run is left');
  t.match(r.out(), /SIGTERM: stopping[\s\S]*stopped/, 'node stopped in order');
});

t.test('LOG_LEVEL=debug: the Worker\'s events are objects in the log, with their level, not JSON in a string', async (t) => {
  const r = await start({ LOG_LEVEL: 'debug' });
  const port = await running(r);
  const [sent] = await sendSmtp(port, 's@example.net', ['alice@example.test'], message({ Subject: 'debug' }, Buffer.from('hi\r\n')));
  t.equal(sent?.code, 250);
  const events = () => r.out().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  const acked = await until('message.acked from the Worker', () => events().find((e) => e.event === 'worker' && e.worker === 'message.acked') ?? null);
  t.match(acked, { event: 'worker', worker: 'message.acked', id: /^[0-9a-f]{32}$/ });
  t.match(events().find((e) => e.worker === 'ingest.queued'), { level: 'debug' }, 'a debug step of the Worker: level from the table');
  t.notOk(events().some((e) => e.event === 'worker' && typeof e.line === 'string' && e.line.startsWith('{')), 'no Worker JSON left inside a string');
  t.match(events().find((e) => e.event === 'delivery.sent'), { to: 'alice@example.test', from: 's@example.net', status: 'sent', dsn: /^2\./ }, 'and the agent\'s delivery line');
  r.p.kill('SIGTERM');
  t.equal(await r.exit, 0);
});

t.test('DATA_DIR is private: a new one is made 0700, an existing 0755 one tightened with a warning', async (t) => {
  const loose = await mkdtemp(join(tmpdir(), 'mailbridge-loose-'));
  t.teardown(() => rm(loose, { recursive: true, force: true }));
  await chmod(loose, 0o755);
  const r = await start({ DATA_DIR: loose });
  const port = await running(r);
  const [sent] = await sendSmtp(port, 's@example.net', ['alice@example.test'], message({ Subject: 'private' }, Buffer.from('hi\r\n')));
  t.equal(sent?.code, 250);
  t.equal((await stat(loose)).mode & 0o777, 0o700, 'the existing data dir is now 0700');
  t.ok((await readdir(join(loose, 'worker'))).length > 0, 'the object\'s files are under it');
  t.match(r.out(), /"event":"relay\.data-dir-tightened".*"was":"0755"/, 'and the log says what it was');
  r.p.kill('SIGTERM');
  t.equal(await r.exit, 0);
  const fresh = join(loose, 'a', 'b');
  const { privateDataDir } = await import('../../local/data-dir.ts');
  const said: string[] = [];
  privateDataDir(fresh, (e) => said.push(e));
  t.equal((await stat(fresh)).mode & 0o777, 0o700, 'a new one is created 0700 whatever the umask');
  t.same(said, [], 'with nothing to warn about');
});
