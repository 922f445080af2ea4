// edge-agent/systemd/mailbridge-agent.service: a bad setting (exit 2) shows as failed instead
// of a restart loop, crash loops end, the token comes in as a credential, the one-file agent is
// what runs, and systemd itself accepts the unit and the .deb's version of it (systemd-analyze
// verify and security, where it is installed). test/systemd runs it under a real systemd.
import t from 'tap';
import { execFile } from 'node:child_process';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { debUnit } from '../../edge-agent/package/deb.ts';
import { ciSkip } from '../helpers/skip.ts';

const UNIT = new URL('../../edge-agent/systemd/mailbridge-agent.service', import.meta.url);
const text = await readFile(UNIT, 'utf8');

/** Every value of `key` (a directive may repeat), comments left out. */
const values = (key: string): string[] =>
  [...text.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => (m[1] ?? '').trim());
const one = (key: string): string | undefined => values(key).at(-1);

t.test('a bad setting (exit 2) is not restarted; a crash loop ends', async (t) => {
  t.equal(one('Restart'), 'always');
  t.same(one('RestartPreventExitStatus')?.split(/\s+/), ['2', '243'], 'exit 2 = bad setting, 243 = a credential systemd cannot load: failed, not a loop');
  t.not(one('StartLimitIntervalSec'), '0', 'a start limit applies');
  t.ok(Number(one('StartLimitBurst')) > 1, 'a few restarts are allowed before giving up');
});

t.test('the one-file agent runs, told readiness and pinged by the watchdog, the token as a credential', async (t) => {
  t.equal(one('ExecStart'), '/usr/local/bin/mailbridge-agent', 'no /usr/bin/node, no flags: they are inside');
  t.equal(one('Type'), 'notify');
  t.equal(one('NotifyAccess'), 'all', 'READY=1 and WATCHDOG=1 come from the systemd-notify child');
  t.ok(Number(one('WatchdogSec')) >= 10, 'a watchdog with room for a slow moment');
  t.same(values('LoadCredential'), ['token:/etc/mailbridge/agent.token'], 'read by the agent as $CREDENTIALS_DIRECTORY/token');
  // Without it systemd fails a missing token file with 243 naming no file; with it the agent
  // starts, finds the token blank and exits 2 naming the file (test/systemd proves it).
  t.same(values('SetCredential'), ['token:\\n'], 'a blank stand-in when the token file is missing');
  t.notMatch(text, /MAILBRIDGE_TOKEN=/, 'no token in the unit');
});

t.test('the stop timeout is a floor: the agent extends it to its own limit as it stops (notify.ts)', async (t) => {
  t.equal(one('KillSignal'), 'SIGTERM');
  // Below the agent's own limit at the default stopGraceMs (20 s + 20 s): EXTEND_TIMEOUT_USEC= rules.
  t.ok(Number(one('TimeoutStopSec')) >= 10 && Number(one('TimeoutStopSec')) <= 40, 'a floor, not the limit');
  const notify = await readFile(new URL('../../edge-agent/ops/notify.ts', import.meta.url), 'utf8');
  t.match(notify, /'STOPPING=1', `EXTEND_TIMEOUT_USEC=\$\{/, 'STOPPING=1 carries EXTEND_TIMEOUT_USEC=');
});

const verifySkip = async (): Promise<string | false> => {
  try {
    await promisify(execFile)('systemd-analyze', ['--version']);
    return false;
  } catch {
    return ciSkip('systemd-analyze', 'no systemd-analyze here (apt-get install systemd)');
  }
};

const analyze = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
  promisify(execFile)('systemd-analyze', args).then(
    (ok) => ({ code: 0, stdout: ok.stdout, stderr: ok.stderr }),
    (err: { code?: number; stdout?: string; stderr?: string }) => ({ code: err.code ?? 1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' }),
  );

t.test('systemd-analyze verify accepts it, as the tarball and as the .deb install it; the hardening stays', { skip: await verifySkip() }, async (t) => {
  // ExecStart must name an executable that exists: a stand-in at a path of the test's own.
  const dir = t.testdir({});
  const exe = join(dir, 'mailbridge-agent');
  await writeFile(exe, '#!/bin/sh\n');
  await chmod(exe, 0o755);
  const deb = debUnit(text);
  t.match(deb, /^ExecStart=\/usr\/bin\/mailbridge-agent$/m, 'the package runs /usr/bin/mailbridge-agent');
  t.match(deb, /^Documentation=man:mailbridge-agent\(8\) file:\/usr\/share\/doc\/mailbridge-agent\/operations\.md$/m);
  for (const [name, unitText] of [['tarball', text], ['deb', deb]] as const) {
    const unit = join(dir, name, 'mailbridge-agent.service');
    await mkdir(join(dir, name));
    await writeFile(unit, unitText.replace(/^ExecStart=\S+/m, `ExecStart=${exe}`));
    // The man page the .deb's Documentation= names is not installed here.
    const r = await analyze(['verify', ...(name === 'deb' ? ['--man=no'] : []), unit]);
    t.equal(r.code, 0, `${name}: ${r.stderr}`);
    t.equal(r.stderr.trim(), '', `${name}: no warnings`);
    // The score a live systemd gives is 1.7; offline (no user lookup) it says 1.8.
    const sec = await analyze(['security', '--offline=true', unit]);
    const score = Number(/Overall exposure level for \S+: ([0-9.]+)/.exec(sec.stdout)?.[1]);
    t.ok(score <= 1.8, `${name}: systemd-analyze security scores ${score} (at most 1.8)`);
  }
});
