// relayctl finds the local relay (npm start) with no settings: the relay keeps its
// ADMIN_TOKEN and URL in DATA_DIR/admin.json, relayctl reads it from the working
// directory. Explicit settings win, the token never goes to another URL, and a
// stopped relay is said to be stopped.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { silentLogger } from '../../edge-agent/ops/log.ts';
import { startLocalRelay } from '../../local/relay.ts';
import { main } from '../../relayctl/cli.ts';
import { message, sendSmtp } from '../helpers/mail.ts';

const MAIN = fileURLToPath(new URL('../../relayctl/main.ts', import.meta.url));

interface Run { code: number | null; out: string; err: string }

/** `node relayctl/main.ts ...` run in `cwd`, with no RELAYCTL_* or DATA_DIR unless given. */
function proc(args: string[], cwd: string, env: Record<string, string> = {}): Promise<Run> {
  const full: Record<string, string | undefined> = { ...process.env };
  for (const k of Object.keys(full)) if (k.startsWith('RELAYCTL_') || k === 'NODE_OPTIONS' || k === 'DATA_DIR') delete full[k];
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [MAIN, ...args], { cwd, env: { ...full, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => { out += b.toString('utf8'); });
    p.stderr.on('data', (b: Buffer) => { err += b.toString('utf8'); });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, out, err }));
  });
}

/** relayctl's main() in-process, as main.ts calls it. */
async function cli(args: string[], cwd: string, env: Record<string, string | undefined>): Promise<Run> {
  let out = '';
  let err = '';
  const sink = (f: (s: string) => void) => new Writable({ write(c: Buffer, _e, cb) { f(c.toString('utf8')); cb(); } });
  const code = await main(args, { env, cwd, stdout: sink((s) => { out += s; }), stderr: sink((s) => { err += s; }) });
  return { code, out, err };
}

t.test('relayctl status --json against npm start, with only the working directory', async (t) => {
  const home = await mkdtemp(join(tmpdir(), 'relayctl-local-'));
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const dataDir = join(home, 'data');
  // No verdict wait: with the agent stopped, a message is queued and the ingress answers at once.
  const r = await startLocalRelay({ dataDir, smtpPort: 0, vars: { VERDICT_WAIT_MS: '0' }, log: silentLogger });
  let stopped = false;
  t.teardown(() => (stopped ? undefined : r.stop()));

  const file = join(dataDir, 'admin.json');
  t.equal((await stat(file)).mode & 0o777, 0o600, 'admin.json is 0600');
  const saved = JSON.parse(await readFile(file, 'utf8')) as { url: string; token: string };
  t.equal(saved.url, r.workerUrl.origin, 'it names the running Worker');
  t.equal(saved.token, r.adminToken);

  const live = await proc(['status', '--json'], home);
  t.equal(live.code, 0, live.err);
  const s1 = JSON.parse(live.out) as { url: string; agents: { agent: string }[]; total: number };
  t.same(s1.agents.map((a) => a.agent), ['local-agent'], 'the agent is connected');
  t.equal(s1.total, 0);

  await r.agent.stop(1000);
  const [sent] = await sendSmtp(r.smtpPort, 's@example.net', ['alice@example.test'], message({ Subject: 'held' }, Buffer.from('x\r\n')));
  t.equal(sent?.code, 250, 'accepted into the queue');
  const held = await proc(['status', '--json'], home);
  t.equal(held.code, 0, held.err);
  const s2 = JSON.parse(held.out) as { agents: unknown[]; states: Record<string, number>; total: number };
  t.same(s2.agents, [], 'no agent now');
  t.equal(s2.states.queued, 1, "the queue's count: one message waits");
  t.equal(s2.total, 1);

  const viaDataDir = await cli(['status', '--json'], '/', { DATA_DIR: dataDir });
  t.equal(viaDataDir.code, 0, `DATA_DIR names the data dir, as for npm start: ${viaDataDir.err}`);

  const elsewhere = 'http://127.0.0.1:9';
  const urlWins = await cli(['status'], home, { RELAYCTL_URL: elsewhere, RELAYCTL_TOKEN: 'x'.repeat(20) });
  t.equal(urlWins.code, 1);
  t.match(urlWins.err, /cannot reach/, 'an explicit URL and token win over the file');
  const noToken = await cli(['status'], home, { RELAYCTL_URL: elsewhere });
  t.equal(noToken.code, 2);
  t.match(noToken.err, /no admin token/, "the local token is not sent to another URL");
  const sameUrl = await cli(['status', '--json'], home, { RELAYCTL_URL: r.workerUrl.href });
  t.equal(sameUrl.code, 0, `the local URL given explicitly still gets the local token: ${sameUrl.err}`);
  const fromCwd = await cli(['status'], home, {});
  t.equal(fromCwd.code, 0, 'main() looks in cwd when given one');
  const noCwd = await main(['status'], { env: {}, stdout: new Writable({ write(_c, _e, cb) { cb(); } }), stderr: new Writable({ write(_c, _e, cb) { cb(); } }) });
  t.equal(noCwd, 2, 'and not without one (tests and embedders stay hermetic)');

  await r.stop();
  stopped = true;
  const after = JSON.parse(await readFile(file, 'utf8')) as { url: unknown; token: string };
  t.equal(after.url, null, 'stop marks the file stopped');
  t.equal(after.token, saved.token, 'and keeps the token for the next start');
  const gone = await proc(['status'], home);
  t.equal(gone.code, 1);
  t.match(gone.err, /^relayctl: the local relay is not running/);

  const again = await startLocalRelay({ dataDir, smtpPort: 0, log: silentLogger });
  t.equal(again.adminToken, saved.token, 'the next start uses the same token');
  await again.stop();
});
