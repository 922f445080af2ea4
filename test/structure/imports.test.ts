// The folders' dependencies point one way (docs/architecture.md, "Folders and what they may
// import"): reads the import lines of every .ts file and fails on an arrow the layout forbids,
// naming the file and the import, and on any import cycle.
import t from 'tap';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FOLDERS = ['bridge-worker', 'protocol', 'edge-agent', 'lmtp-proxy', 'local', 'relayctl', 'test', 'bench'] as const;
type Folder = typeof FOLDERS[number];
const PRODUCT: readonly Folder[] = ['bridge-worker', 'edge-agent', 'lmtp-proxy', 'protocol', 'relayctl', 'local'];

/** What the Worker may take from npm: nothing today; workerd itself provides `cloudflare:*`. */
const WORKER_PACKAGES: readonly string[] = [];

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (name === 'node_modules' || name.startsWith('.')) return [];
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/**
 * `import … from '…'`, `export … from '…'`, `import '…'` and `import('…')`; `typeOnly` for
 * `import type` / `export type` (erased when run: an arrow, but no edge of a run-time cycle).
 */
function importLines(source: string): { spec: string; typeOnly: boolean }[] {
  const out: { spec: string; typeOnly: boolean }[] = [];
  const re = /(?:^|[\s;])(?:import|export)\s+(type\s+)?(?:[\w*{}\s,$]+?\s+from\s+)?['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/gm;
  for (const m of source.matchAll(re)) out.push({ spec: (m[2] ?? m[3]) as string, typeOnly: m[1] !== undefined });
  return out;
}

const importsOf = (source: string): string[] => importLines(source).map((i) => i.spec);

const folderOf = (path: string): Folder | null => {
  const top = relative(ROOT, path).split('/')[0];
  return (FOLDERS as readonly string[]).includes(top ?? '') ? (top as Folder) : null;
};

/** Why `from` may not import `spec` (resolved to `target` when relative), or null when it may. */
function forbidden(from: Folder, spec: string, target: Folder | null): string | null {
  const local = spec.startsWith('.');
  if (from === 'protocol') {
    if (!local) return 'protocol imports nothing outside protocol/ (no node:, no npm)';
    return target === 'protocol' ? null : `protocol imports only protocol/, not ${target}/`;
  }
  if (from === 'bridge-worker') {
    if (!local) {
      if (spec.startsWith('cloudflare:') || WORKER_PACKAGES.includes(spec)) return null;
      return 'the Worker runs in workerd: no node:* and no npm package it does not bundle';
    }
    return target === 'bridge-worker' || target === 'protocol' ? null : `the Worker imports only bridge-worker/ and protocol/, not ${target}/`;
  }
  if (from === 'lmtp-proxy' && local && target !== 'lmtp-proxy') return `lmtp-proxy is the agent's protocol code: it imports no ${target}/`;
  if (PRODUCT.includes(from) && local && (target === 'test' || target === 'bench')) return `product code imports no ${target}/`;
  // The bench measures what ships; what it shares with the tests (the Dovecot fixture) lives in bench/lib/.
  if (from === 'bench' && local && target === 'test') return 'bench imports no test/ (shared fixtures live in bench/lib/, which tests may import)';
  // local/ holds the stand-ins and the dev harness: what ships (the Worker, the agent, relayctl) never needs them.
  if (PRODUCT.includes(from) && from !== 'local' && local && target === 'local') return `product code imports no local/ (the stand-ins and dev harness)`;
  return null;
}

const all = FOLDERS.flatMap((f) => files(join(ROOT, f)));
const graph = new Map<string, string[]>();
/** Product code's imports, types included: a cycle through a type import still ties two files together. */
const typeGraph = new Map<string, string[]>();
const violations: string[] = [];
for (const file of all) {
  const from = folderOf(file);
  if (from === null) continue;
  const edges: string[] = [];
  const typed: string[] = [];
  for (const { spec, typeOnly } of importLines(readFileSync(file, 'utf8'))) {
    const target = spec.startsWith('.') ? resolve(dirname(file), spec) : null;
    if (target !== null && !typeOnly) edges.push(target);
    if (target !== null) typed.push(target);
    const why = forbidden(from, spec, target === null ? null : folderOf(target));
    if (why !== null) violations.push(`${relative(ROOT, file)} imports '${spec}': ${why}`);
  }
  graph.set(file, edges);
  if (PRODUCT.includes(from)) typeGraph.set(file, typed);
}

/** Every run-time cycle's path (or, given typeGraph, every one), found by depth-first search over the relative imports. */
function cycles(of = graph): string[] {
  const found: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string): void => {
    state.set(f, 'open');
    stack.push(f);
    for (const g of of.get(f) ?? []) {
      if (state.get(g) === 'open') found.push([...stack.slice(stack.indexOf(g)), g].map((p) => relative(ROOT, p)).join(' -> '));
      else if (!state.has(g) && of.has(g)) visit(g);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of of.keys()) if (!state.has(f)) visit(f);
  return found;
}

t.test('the import reader sees every form of import', async (t) => {
  t.same(importsOf([
    "import t from 'tap';", "import { a, type B } from './a.ts';", "import type { C } from \"../c.ts\";",
    "import './side-effect.ts';", "export { d } from './d.ts';", "export * from './e.ts';",
    "const m = await import('./lazy.ts');", "import {\n  x,\n  y,\n} from './multi.ts';",
  ].join('\n')), ['tap', './a.ts', '../c.ts', './side-effect.ts', './d.ts', './e.ts', './lazy.ts', './multi.ts']);
  t.same(importLines("import type { C } from './c.ts';\nimport { type D } from './d.ts';").map((i) => i.typeOnly), [true, false]);
});

t.test('the rules refuse each forbidden arrow', async (t) => {
  t.type(forbidden('bridge-worker', 'node:crypto', null), 'string');
  t.type(forbidden('bridge-worker', 'smtp-server', null), 'string');
  t.equal(forbidden('bridge-worker', 'cloudflare:workers', null), null);
  t.type(forbidden('bridge-worker', '../edge-agent/x.ts', 'edge-agent'), 'string');
  t.type(forbidden('bridge-worker', '../local/x.ts', 'local'), 'string');
  t.equal(forbidden('bridge-worker', '../protocol/wire.ts', 'protocol'), null);
  for (const to of ['protocol', 'local', 'edge-agent', 'bridge-worker'] as const) t.type(forbidden('lmtp-proxy', `../${to}/x.ts`, to), 'string');
  t.type(forbidden('protocol', 'node:crypto', null), 'string');
  t.type(forbidden('protocol', '../lmtp-proxy/x.ts', 'lmtp-proxy'), 'string');
  for (const from of PRODUCT) t.type(forbidden(from, '../../test/x.ts', 'test'), 'string', `${from} -> test`);
  t.equal(forbidden('test', '../../local/x.ts', 'local'), null);
  for (const from of ['relayctl', 'edge-agent'] as const) t.type(forbidden(from, '../local/x.ts', 'local'), 'string', `${from} -> local`);
  t.equal(forbidden('local', './x.ts', 'local'), null);
  t.type(forbidden('bench', '../test/fixtures/x.ts', 'test'), 'string', 'bench -> test');
  t.equal(forbidden('test', '../../bench/lib/x.ts', 'bench'), null);
});

t.test('it reads the project', async (t) => {
  t.ok(all.length > 50, `${all.length} files`);
  t.ok([...graph.values()].some((e) => e.length > 0));
});

t.test('no import goes against the layout', async (t) => {
  t.same(violations, [], violations.join('\n'));
});

t.test('no import cycles', async (t) => {
  const found = cycles();
  t.same(found, [], found.join('\n'));
});

t.test('no import cycles in product code, type imports included', async (t) => {
  const found = cycles(typeGraph);
  t.same(found, [], found.join('\n'));
});
