// bench:cloud splits each measured window into the Worker's invocation and the queue object's,
// which the edge limits separately, by uprobes on workerd's IoContext (bench/lib/invocation-owner.ts).
// This proves the split on a real workerd: JS that burns in a Worker is the Worker's, JS that
// burns in a Durable Object the Worker called is the object's, and the object's start (its
// database opened inside the Worker's stub call, locally) is the object's too.
import t from 'tap';
import { Miniflare } from 'miniflare';
import { readlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { perfUnavailable, startScopeSampler } from '../../bench/lib/cpu-scope.ts';
import { installProbes, ownerAt, parseOwnerTrace, shareByOwner, startOwnerTracer } from '../../bench/lib/invocation-owner.ts';
import { childrenNamed } from '../../bench/lib/proc.ts';
import { untilQuiet } from '../../bench/lib/thread-cpu.ts';
import { ciSkip } from '../helpers/skip.ts';

t.test('parseOwnerTrace(): an actor makes the object; its Worker makes the Worker; any other Worker is local; addresses are reused', async (t) => {
  const lines = [
    '  10.000000001:  mailbridge:ioctx_new: (55) ctx=0xa0 worker=0xe0 actor=0x0',    // Miniflare's entry worker
    '  10.000000002:  mailbridge:run_impl: (55) ctx=0xa0',
    '  10.000000003:  mailbridge:ioctx_new: (55) ctx=0xb0 worker=0xf0 actor=0x0',    // our Worker's request
    '  10.000000004:  mailbridge:run_impl: (55) ctx=0xb0',
    '  10.000000005:  mailbridge:ioctx_new: (55) ctx=0xc0 worker=0xf0 actor=0x7f00', // the object, in the same Worker
    '  10.000000006:  mailbridge:run_impl: (55) ctx=0xc0',
    '  10.000000007:  mailbridge:run_impl: (55) ctx=0xd0',                              // made before the trace began
    '  10.000000008:  mailbridge:ioctx_new: (55) ctx=0xc0 worker=0xf0 actor=0x0',    // the address again, a request now
    '  10.000000009:  mailbridge:run_impl: (55) ctx=0xc0',
  ];
  const trace = await parseOwnerTrace(lines);
  t.same(trace.owners, ['local', 'worker', 'object', 'worker', 'worker']);
  t.equal(trace.unknown, 1);
  t.equal(ownerAt(trace, 10e9), null, 'before any entry: nobody');
  t.equal(ownerAt(trace, 10e9 + 6.5), 'object', 'between entries: the last one');
  t.equal(ownerAt(trace, 10e9 + 6), 'object', 'at an entry\'s own time: that entry');
  t.equal(ownerAt(trace, 10e9 + 100), 'worker');
  const samples = {
    times: Float64Array.from([10e9 + 2.5, 10e9 + 4.5, 10e9 + 6.5, 10e9 + 6.6, 10e9 + 6.7, 10e9 + 6.8]),
    inScope: Uint8Array.from([1, 1, 1, 0, 1, 1]),
    hint: Uint8Array.from([0, 1, 0, 0, 2, 0]),  // a stack that says: the object's start; stdout log formatting
  };
  t.same(shareByOwner(samples, trace, 0, Infinity), { samples: 6, inScope: 5, worker: 0, object: 3, local: 2, start: 1 });
});

const why = ciSkip('perf and tracefs uprobe', perfUnavailable() ?? installProbesOnce());
function installProbesOnce(): string | null {
  const bin = join(process.cwd(), 'node_modules', '@cloudflare', 'workerd-linux-64', 'bin', 'workerd');
  return installProbes(bin);
}

t.test('on a real workerd: the Worker\'s JS is the Worker\'s, the object\'s JS and start the object\'s', { skip: why ?? false }, async (t) => {
  const burn = 'let x = 0; for (let i = 0; i < 15_000_000; i++) x = (x + i * 7) % 1000003;';
  const mf = new Miniflare({
    modules: true, compatibilityDate: '2026-04-01',
    durableObjects: { OBJ: { className: 'Obj', useSQLite: true } },
    script: `import { DurableObject } from 'cloudflare:workers';
    export class Obj extends DurableObject {
      constructor(ctx, env) { super(ctx, env); ctx.storage.sql.exec('CREATE TABLE IF NOT EXISTS t (x)'); }
      work() { ${burn} return x; }
      nothing() { return 0; }
    }
    export default { async fetch(req, env) {
      const u = new URL(req.url);
      const stub = env.OBJ.get(env.OBJ.idFromName(u.searchParams.get('name') ?? 'a'));
      if (u.pathname === '/worker') { ${burn} return new Response(String(x + await stub.nothing())); }
      return new Response(String(await stub.work()));
    } };`,
  });
  t.teardown(() => mf.dispose());
  const url = await mf.ready;
  const pid = childrenNamed(process.pid, 'workerd')[0] ?? -1;
  t.ok(pid > 0, 'workerd runs as a child');
  t.equal(readlinkSync(`/proc/${pid}/exe`), join(process.cwd(), 'node_modules', '@cloudflare', 'workerd-linux-64', 'bin', 'workerd'), 'the probed binary');
  const dir = await mkdtemp(join(tmpdir(), 'owner-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const tracer = await startOwnerTracer(pid, join(dir, 'owners.data'));
  const sampler = await startScopeSampler(pid, join(dir, 'perf.data'));
  const window = async (path: string): Promise<{ t0: number; t1: number }> => {
    await untilQuiet(pid, pid);
    const t0 = Number(process.hrtime.bigint());
    t.equal((await fetch(new URL(path, url))).status, 200, path);
    await untilQuiet(pid, pid);
    return { t0, t1: Number(process.hrtime.bigint()) };
  };
  await window('/worker?name=warm');  // compile both, start one object
  await window('/object?name=warm');
  const inWorker = await window('/worker?name=warm');
  const inObject = await window('/object?name=warm');
  const fresh = await window('/worker?name=fresh');  // a new object: started inside the Worker's stub call
  const samples = await sampler.stop();
  const trace = await tracer.stop();
  const w = shareByOwner(samples, trace, inWorker.t0, inWorker.t1);
  const o = shareByOwner(samples, trace, inObject.t0, inObject.t1);
  const f = shareByOwner(samples, trace, fresh.t0, fresh.t1);
  t.ok(w.inScope >= 20, `the Worker's loop was sampled: ${JSON.stringify(w)}`);
  t.ok(w.worker / w.inScope >= 0.9, `the Worker's loop is the Worker's: ${JSON.stringify(w)}`);
  t.ok(o.inScope >= 20, `the object's loop was sampled: ${JSON.stringify(o)}`);
  t.ok(o.object / o.inScope >= 0.9, `the object's loop is the object's: ${JSON.stringify(o)}`);
  t.ok(f.object > 0, `a fresh object's start (database, constructor) is the object's: ${JSON.stringify(f)}`);
  t.ok(f.worker / f.inScope >= 0.6, `the Worker's loop stays the Worker's: ${JSON.stringify(f)}`);
});
