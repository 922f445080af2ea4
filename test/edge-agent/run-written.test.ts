// edge-agent/package/run-written.ts: a program still open for writing somewhere cannot be run
// (ETXTBSY); runWritten waits for the write to close instead of failing the build.
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { runWritten } from '../../edge-agent/package/run-written.ts';

t.test('a program held open for writing runs once the write is closed', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'run-written-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const exe = join(dir, 'echo');
  await copyFile('/bin/echo', exe);
  const writer = await open(exe, 'r+');
  let closed = false;
  try {
    // The race CI met, made to last: without the retry this is the error packageDeb failed with.
    // (spawn throws it at once rather than rejecting.)
    const err = await (async () => promisify(execFile)(exe, ['x']))().then(() => null, (e: NodeJS.ErrnoException) => e);
    t.equal(err?.code, 'ETXTBSY', 'a plain spawn fails while the write is open');
    setTimeout(() => { closed = true; void writer.close(); }, 200);
    const { stdout } = await runWritten(exe, ['ran']);
    t.equal(stdout, 'ran\n');
    t.ok(closed, 'it ran only after the write closed');
  } finally {
    if (!closed) await writer.close();
  }
});

t.test('other errors, and ETXTBSY past the last try, are thrown at once', async (t) => {
  await t.rejects(runWritten('/nonexistent/program', []), { code: 'ENOENT' });
  const dir = await mkdtemp(join(tmpdir(), 'run-written-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const exe = join(dir, 'true');
  await copyFile('/bin/true', exe);
  const writer = await open(exe, 'r+');
  try {
    await t.rejects(runWritten(exe, [], { tries: 3, waitMs: 10 }), { code: 'ETXTBSY' });
  } finally {
    await writer.close();
  }
});
