// The agent's release artifact (`npm run release:agent`): the executable built afresh, the
// systemd unit, a sample agent.json and the operations guide, in
// dist/mailbridge-agent-<version>-linux-x64.tar.gz, one folder of that name inside.
import { execFile } from 'node:child_process';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { buildExecutable } from './build.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

const README = (name: string): string => `${name}: the mailbridge edge-agent, one executable with Node 22 inside.

  mailbridge-agent          the agent (mailbridge-agent --help, mailbridge-agent --version)
  mailbridge-agent.service  its systemd unit
  agent.json.example        the smallest useful /etc/mailbridge/agent.json
  operations.md             the operations guide: section 3 installs the agent

Install (as root; operations.md section 3 has the details):

  useradd --system --home /var/lib/mailbridge --shell /usr/sbin/nologin mailbridge
  install -m 0755 mailbridge-agent /usr/local/bin/
  install -d -m 0755 /etc/mailbridge
  install -m 0644 agent.json.example /etc/mailbridge/agent.json     # then edit it
  (umask 077; cat > /etc/mailbridge/agent.token)                   # paste the agent token, Ctrl-D
  install -m 0644 mailbridge-agent.service /etc/systemd/system/
  install -D -m 0644 operations.md /usr/local/share/doc/mailbridge-agent/operations.md
  systemctl daemon-reload && systemctl enable --now mailbridge-agent
  journalctl -u mailbridge-agent -f
`;

export async function releaseAgent(): Promise<string> {
  const { version } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const name = `mailbridge-agent-${version}-linux-x64`;
  const dir = join(ROOT, 'dist', name);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await buildExecutable(join(dir, 'mailbridge-agent'));
  await copyFile(join(ROOT, 'edge-agent/systemd/mailbridge-agent.service'), join(dir, 'mailbridge-agent.service'));
  await copyFile(join(ROOT, 'deploy/agent.json.example'), join(dir, 'agent.json.example'));
  await copyFile(join(ROOT, 'docs/operations.md'), join(dir, 'operations.md'));
  await writeFile(join(dir, 'README'), README(name));
  const tarball = `${dir}.tar.gz`;
  await promisify(execFile)('tar', ['-czf', tarball, '--owner=0', '--group=0', '-C', join(ROOT, 'dist'), name]);
  await rm(dir, { recursive: true, force: true });
  return tarball;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.stdout.write(`${await releaseAgent()}\n`);
}
