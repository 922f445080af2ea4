// `wrangler deploy --dry-run` is how deployment is tested without a Cloudflare account:
// wrangler.toml must be valid, the Worker must bundle, and the bundle may import
// nothing from Node (bridge-worker runs on workerd, not Node).
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const WRANGLER = join(ROOT, 'node_modules/wrangler/bin/wrangler.js');

t.test('wrangler deploy --dry-run bundles the Worker and its Durable Object', async (t) => {
  const out = await mkdtemp(join(tmpdir(), 'mailbridge-deploy-'));
  t.teardown(() => rm(out, { recursive: true, force: true }));
  const { stdout } = await promisify(execFile)(process.execPath, [WRANGLER, 'deploy', '--dry-run', '--outdir', out], {
    cwd: ROOT, encoding: 'utf8', timeout: 120_000,
    env: { ...process.env, WRANGLER_SEND_METRICS: 'false', NO_UPDATE_NOTIFIER: '1' },
  });
  t.match(stdout, /env\.RELAY \(RelayQueue\)\s+Durable Object/);
  t.match(stdout, /env\.BODIES \(mailbridge-bodies\)\s+R2 Bucket/, 'the message bodies\' bucket is bound, as every local run binds it');
  t.match(stdout, /--dry-run: exiting now/);
  const bundle = await readFile(join(out, 'index.js'), 'utf8');
  t.match(bundle, /RelayQueue = class extends DurableObject/);
  const imports = [...bundle.matchAll(/^import .* from "([^"]+)";?$/gm)].map((m) => m[1]);
  t.same(imports, ['cloudflare:workers'], 'the only import is the Workers runtime');
  t.notMatch(bundle, /\brequire\(["']node:/, 'no Node built-ins');
});

// wrangler.paid.toml: the same deploy with Cloudflare's CPU limit at the Free plan's 10 ms,
// for Workers Paid accounts (the Free plan refuses a deploy that sets `limits`).
t.test('wrangler.paid.toml is wrangler.toml plus a 10 ms CPU limit, and deploys', async (t) => {
  const lines = (text: string): string[] => text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const free = lines(await readFile(join(ROOT, 'wrangler.toml'), 'utf8'));
  const paid = lines(await readFile(join(ROOT, 'wrangler.paid.toml'), 'utf8'));
  t.notOk(free.some((l) => /^\[limits\]|^limits\b|cpu_ms/.test(l)), 'wrangler.toml sets no limits: Free would refuse the deploy');
  t.same(paid.slice(-2), ['[limits]', 'cpu_ms = 10'], 'the paid file ends with the Free plan\'s limit');
  t.same(paid.slice(0, -2), free, 'and is otherwise wrangler.toml, line for line');
  const out = await mkdtemp(join(tmpdir(), 'mailbridge-deploy-paid-'));
  t.teardown(() => rm(out, { recursive: true, force: true }));
  const { stdout } = await promisify(execFile)(process.execPath, [WRANGLER, 'deploy', '--dry-run', '-c', 'wrangler.paid.toml', '--outdir', out], {
    cwd: ROOT, encoding: 'utf8', timeout: 120_000,
    env: { ...process.env, WRANGLER_SEND_METRICS: 'false', NO_UPDATE_NOTIFIER: '1' },
  });
  t.match(stdout, /env\.BODIES \(mailbridge-bodies\)\s+R2 Bucket/);
  t.match(stdout, /--dry-run: exiting now/);
});

// clock.ts: the queue's clock can be set only where TEST_CLOCK is present; no deploy may set it.
t.test('no wrangler file sets TEST_CLOCK, and the local relay cannot pass it', async (t) => {
  for (const f of ['wrangler.toml', 'wrangler.paid.toml']) {
    t.notMatch(await readFile(join(ROOT, f), 'utf8'), /TEST_CLOCK/, `${f} does not set TEST_CLOCK`);
  }
  const { VAR_NAMES, SECRET_NAMES } = await import('../../bridge-worker/config.ts');
  t.notOk(([...VAR_NAMES, ...SECRET_NAMES] as string[]).includes('TEST_CLOCK'), 'TEST_CLOCK is no setting the local relay passes on');
});
