// warm-up-chunks.ts compiles the chunk path at a fresh isolate's start (issue #24). It only helps
// if its sample goes the whole way a small message does: read as a byte stream, hashed, its
// Cloudflare block found. It needs the Workers runtime (DigestStream), so it runs in workerd.
import { build } from 'esbuild';
import { Miniflare } from 'miniflare';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { SAMPLE } from '../../bridge-worker/warm-up.ts';

const module = fileURLToPath(new URL('../../bridge-worker/warm-up-chunks.ts', import.meta.url));

t.test('in workerd, the sample is stored whole by the chunk path and its block is found', async (t) => {
  const out = await build({
    stdin: {
      contents: `import { warmChunkPath } from ${JSON.stringify(module)};
        export default { async fetch() { return Response.json(await warmChunkPath()); } };`,
      resolveDir: process.cwd(), loader: 'ts',
    },
    bundle: true, write: false, format: 'esm', platform: 'neutral', target: 'es2022',
    conditions: ['workerd', 'worker', 'browser'], external: ['cloudflare:*'], logLevel: 'silent',
  });
  const mf = new Miniflare({ modules: true, compatibilityDate: '2026-04-01', script: out.outputFiles[0]?.text ?? '' });
  t.teardown(() => mf.dispose());
  const r = await mf.dispatchFetch('http://warm.test/');
  const block = new TextDecoder('latin1').decode(SAMPLE).indexOf('From: ');
  t.ok(block > 0, 'the sample starts with a Cloudflare block');
  t.same(await r.json(), { ok: true, prefix: block }, 'stored, and the block before the sender\'s header found');
});
