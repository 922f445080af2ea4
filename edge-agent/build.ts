// Builds the agent as it is deployed: edge-agent/main.ts and everything it imports in one
// ES module, dist/edge-agent.mjs (`npm run build:agent`; `node edge-agent/build.ts [outfile]`).
// Why not run main.ts directly: Node's type stripping loads a WebAssembly TypeScript parser
// that stays resident, ~40 MB of the agent's RSS (docs/performance.md).
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

export const AGENT_BUNDLE = fileURLToPath(new URL('../dist/edge-agent.mjs', import.meta.url));
/** How the bundle is started (systemd unit, `npm run agent`): see reclaim.ts. */
export const AGENT_NODE_FLAGS = ['--expose-gc'];

export async function buildAgent(outfile = AGENT_BUNDLE): Promise<string> {
  await build({
    entryPoints: [fileURLToPath(new URL('./main.ts', import.meta.url))],
    bundle: true, platform: 'node', format: 'esm', target: 'node22', outfile, logLevel: 'warning',
    // Loaded from node_modules on first use (logSubject only): ~1.7 MB of charset tables
    // that an agent without Subject logging never needs.
    external: ['mailparser'],
    // ws and other CommonJS dependencies call require() for Node built-ins.
    banner: { js: "import { createRequire as __mb_require } from 'node:module'; const require = __mb_require(import.meta.url);" },
  });
  return outfile;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.stdout.write(`${await buildAgent(process.argv[2])}\n`);
}
