// A private Postfix instance for the "Postfix relay" path (today's EC2 gateway design):
// its own config_directory, queue and data directories in a temp dir, smtpd on a free
// 127.0.0.1 port, relay_domains example.test, everything sent to Dovecot's LMTP
// listener, no local delivery. Postfix's own defaults otherwise (process limits,
// destination concurrency, connection cache), as a stock gateway would run.
import { execFile } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface PostfixInstance {
  smtpPort: number;
  masterPid: number;
  dir: string;
  version: string;
  stop(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

function greets(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const done = (ok: boolean): void => { s.destroy(); resolve(ok); };
    s.setTimeout(2000, () => done(false));
    s.once('error', () => done(false));
    s.once('data', (d: Buffer) => { s.end('QUIT\r\n'); done(d.toString('latin1').startsWith('220 ')); });
  });
}

const MASTER_CF = (port: number): string => [
  '# Written by bench/lib/postfix.ts: no chroot, no local delivery, postlog for maillog_file.',
  `${port} inet n - n - - smtpd`,
  'pickup unix n - n 60 1 pickup',
  'cleanup unix n - n - 0 cleanup',
  'qmgr unix n - n 300 1 qmgr',
  'rewrite unix - - n - - trivial-rewrite',
  'bounce unix - - n - 0 bounce',
  'defer unix - - n - 0 bounce',
  'trace unix - - n - 0 bounce',
  'verify unix - - n - 1 verify',
  'flush unix n - n 1000? 0 flush',
  'proxymap unix - - n - - proxymap',
  'proxywrite unix - - n - 1 proxymap',
  'showq unix n - n - - showq',
  'error unix - - n - - error',
  'retry unix - - n - - error',
  'discard unix - - n - - discard',
  'lmtp unix - - n - - lmtp',
  'anvil unix - - n - 1 anvil',
  'scache unix - - n - 1 scache',
  'postlog unix-dgram n - n - 1 postlogd',
  '',
].join('\n');

export async function postfixVersion(): Promise<string | null> {
  try {
    const { stdout } = await run('postconf', ['-d', '-h', 'mail_version']);
    return stdout.trim();
  } catch {
    return null;
  }
}

export async function startPostfix(lmtpPort: number): Promise<PostfixInstance> {
  const version = await postfixVersion();
  if (version === null) throw new Error('postconf not found: Postfix is not installed');
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-bench-postfix-'));
  const conf = join(dir, 'conf');
  const root = process.getuid?.() === 0;
  const user = root ? 'postfix' : (await run('id', ['-un'])).stdout.trim();
  const group = root ? 'postdrop' : (await run('id', ['-gn'])).stdout.trim();
  await mkdir(conf);
  await mkdir(join(dir, 'queue'));
  await mkdir(join(dir, 'data'));
  await chmod(dir, 0o755);
  if (root) {
    const uid = Number((await run('id', ['-u', 'postfix'])).stdout.trim());
    await chown(join(dir, 'data'), uid, -1);
  }
  const port = await freePort();
  const lmtp = `lmtp:inet:127.0.0.1:${lmtpPort}`;
  const main = [
    '# Written by bench/lib/postfix.ts: a private relay instance for the benchmark.',
    'compatibility_level = 3.6',
    `queue_directory = ${dir}/queue`,
    `data_directory = ${dir}/data`,
    `mail_owner = ${user}`,
    `setgid_group = ${group}`,
    'myhostname = bench-postfix.localdomain',
    'inet_interfaces = 127.0.0.1',
    'inet_protocols = ipv4',
    'mydestination =',
    'local_recipient_maps =',
    'local_transport = error:5.1.1 no local delivery in the bench instance',
    'alias_maps =',
    'alias_database =',
    'relay_domains = example.test',
    'relay_recipient_maps =',
    'mynetworks = 127.0.0.0/8',
    'smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination',
    `default_transport = ${lmtp}`,
    `relay_transport = ${lmtp}`,
    `transport_maps = inline:{ example.test=${lmtp} }`,
    `maillog_file_prefixes = ${dir}`,
    `maillog_file = ${dir}/maillog`,
    'biff = no',
    'smtputf8_enable = no',
    // The relay accepts 25 MiB; Postfix's default is 10 MB.
    'message_size_limit = 52428800',
    '',
  ].join('\n');
  await writeFile(join(conf, 'main.cf'), main);
  await writeFile(join(conf, 'master.cf'), MASTER_CF(port));
  const log = async (): Promise<string> => readFile(join(dir, 'maillog'), 'utf8').catch(() => '(no maillog)');
  try {
    await run('postfix', ['-c', conf, 'start'], { timeout: 30_000 });
  } catch (err) {
    const out = err as { stderr?: string; message?: string };
    await rm(dir, { recursive: true, force: true });
    throw new Error(`postfix start failed: ${out.message ?? ''}\n${out.stderr ?? ''}`);
  }
  const until = Date.now() + 15_000;
  while (!(await greets(port))) {
    if (Date.now() > until) {
      const text = await log();
      await run('postfix', ['-c', conf, 'abort']).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
      throw new Error(`Postfix did not greet on 127.0.0.1:${port}:\n${text.slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const masterPid = Number((await readFile(join(dir, 'queue', 'pid', 'master.pid'), 'utf8')).trim());
  return {
    smtpPort: port, masterPid, dir, version,
    async stop() {
      await run('postfix', ['-c', conf, 'stop']).catch(() => undefined);
      for (let i = 0; i < 100; i++) {
        try {
          process.kill(masterPid, 0);
        } catch {
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
