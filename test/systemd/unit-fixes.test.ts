// The agent's two halves of the unit's fixes (issue #25), quick and without a booted systemd
// (test/systemd/run.ts proves them under one):
// - the unit's SetCredential=token:\n stands in for a missing token file: a blank credential is a
//   bad setting (exit 2, not restarted) whose message names /etc/mailbridge/agent.token;
// - on SIGTERM the agent's STOPPING=1 carries EXTEND_TIMEOUT_USEC= past its own limit, so the
//   stop setting, not TimeoutStopSec, decides when systemd kills it; and it is sent again when
//   systemd's SIGTERM to the unit's processes caught the systemd-notify run that carried it.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../../edge-agent/agent-config.ts';
import { systemdNotifier } from '../../edge-agent/ops/notify.ts';
import { loadSettings } from '../../edge-agent/daemon-settings.ts';
import { listenNotify } from '../helpers/notify-socket.ts';

t.test('a blank token credential names the file the unit loads it from', async (t) => {
  const dir = t.testdir({ creds: { token: '\n' }, 'agent.json': JSON.stringify({ workerUrl: 'wss://relay.example.workers.dev/agent' }) });
  t.throws(() => loadSettings(join(dir, 'agent.json'), { CREDENTIALS_DIRECTORY: join(dir, 'creds') }),
    new ConfigError('$CREDENTIALS_DIRECTORY/token: empty: no agent token in /etc/mailbridge/agent.token (the unit\'s LoadCredential=token:<file>); write it there, root\'s, mode 0600'));
  const good = t.testdir({ creds: { token: 'agent-token-0123456789abcdef\n' }, 'agent.json': JSON.stringify({ workerUrl: 'wss://relay.example.workers.dev/agent' }) });
  t.equal(loadSettings(join(good, 'agent.json'), { CREDENTIALS_DIRECTORY: join(good, 'creds') }).agent.token, 'agent-token-0123456789abcdef', 'a real one is read as before');
});

function notifySkip(): string | false {
  for (const tool of ['systemd-notify', 'python3']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      if (process.env.CI) throw new Error(`CI must run this test: no ${tool}`);
      return `no ${tool} here`;
    }
  }
  return false;
}

const cases = [
  { name: 'STOPPING=1 and EXTEND_TIMEOUT_USEC= past the agent\'s own limit, in one message', killedOnce: false },
  { name: 'the message again when systemd\'s SIGTERM killed the systemd-notify carrying it', killedOnce: true },
];
for (const { name, killedOnce } of cases) t.test(name, { skip: notifySkip() }, async (t) => {
  const { dir, socket, got, until } = await listenNotify(t, { repr: true });
  const failures: unknown[] = [];
  let path = process.env.PATH ?? '';
  if (killedOnce) {
    // A systemd-notify that the first time dies of SIGTERM before it sends, as one started
    // while systemd signals the unit's processes does.
    const real = execFileSync('sh', ['-c', 'command -v systemd-notify'], { encoding: 'utf8' }).trim();
    await writeFile(join(dir, 'systemd-notify'), `#!/bin/sh\nif [ ! -e ${dir}/once ]; then : > ${dir}/once; kill -TERM $$; fi\nexec ${real} "$@"\n`);
    await chmod(join(dir, 'systemd-notify'), 0o755);
    path = `${dir}:${path}`;
  }
  const notifier = systemdNotifier({ ...process.env, PATH: path, NOTIFY_SOCKET: socket }, (event, fields) => { failures.push({ event, fields }); });
  // stopGraceMs 20 s + 20 s: the agent exits by itself within 40 s; systemd waits 10 s longer.
  notifier.stopping(40_000);
  notifier.close();
  await until('STOPPING=1', () => got().includes('STOPPING=1'));
  t.match(got(), /^'STOPPING=1\\nEXTEND_TIMEOUT_USEC=50000000'$/m, 'one datagram: systemd reads both at once');
  t.same(failures, []);
});
