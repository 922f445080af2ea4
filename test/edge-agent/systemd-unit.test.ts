// edge-agent/systemd/mailbridge-agent.service: a bad setting (exit 2) shows as failed instead
// of a restart loop, crash loops end, the token comes in as a credential, the one-file agent is
// what runs, and systemd itself accepts the unit (systemd-analyze verify, where it is installed).
import t from 'tap';
import { execFile } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ciSkip } from '../helpers/skip.ts';

const UNIT = new URL('../../edge-agent/systemd/mailbridge-agent.service', import.meta.url);
const text = await readFile(UNIT, 'utf8');

/** Every value of `key` (a directive may repeat), comments left out. */
const values = (key: string): string[] =>
  [...text.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => (m[1] ?? '').trim());
const one = (key: string): string | undefined => values(key).at(-1);

t.test('a bad setting (exit 2) is not restarted; a crash loop ends', async (t) => {
  t.equal(one('Restart'), 'always');
  t.same(one('RestartPreventExitStatus')?.split(/\s+/), ['2'], 'exit 2 = bad setting: failed, not a loop');
  t.not(one('StartLimitIntervalSec'), '0', 'a start limit applies');
  t.ok(Number(one('StartLimitBurst')) > 1, 'a few restarts are allowed before giving up');
});

t.test('the one-file agent runs, told readiness and pinged by the watchdog, the token as a credential', async (t) => {
  t.equal(one('ExecStart'), '/usr/local/bin/mailbridge-agent', 'no /usr/bin/node, no flags: they are inside');
  t.equal(one('Type'), 'notify');
  t.equal(one('NotifyAccess'), 'all', 'READY=1 and WATCHDOG=1 come from the systemd-notify child');
  t.ok(Number(one('WatchdogSec')) >= 10, 'a watchdog with room for a slow moment');
  t.same(values('LoadCredential'), ['token:/etc/mailbridge/agent.token'], 'read by the agent as $CREDENTIALS_DIRECTORY/token');
  t.notMatch(text, /MAILBRIDGE_TOKEN=/, 'no token in the unit');
});

const verifySkip = async (): Promise<string | false> => {
  try {
    await promisify(execFile)('systemd-analyze', ['--version']);
    return false;
  } catch {
    return ciSkip('systemd-analyze', 'no systemd-analyze here (apt-get install systemd)');
  }
};

t.test('systemd-analyze verify accepts it', { skip: await verifySkip() }, async (t) => {
  // ExecStart must name an executable that exists: a stand-in at a path of the test's own.
  const dir = t.testdir({});
  const exe = join(dir, 'mailbridge-agent');
  await writeFile(exe, '#!/bin/sh\n');
  await chmod(exe, 0o755);
  const unit = join(dir, 'mailbridge-agent.service');
  await writeFile(unit, text.replace(/^ExecStart=\S+/m, `ExecStart=${exe}`));
  const r = await promisify(execFile)('systemd-analyze', ['verify', unit]).then(
    (ok) => ({ code: 0, stderr: ok.stderr }),
    (err: { code?: number; stderr?: string }) => ({ code: err.code ?? 1, stderr: err.stderr ?? '' }),
  );
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr.trim(), '', 'no warnings');
});
