// The bench's mailbox reset: every cell must start from the same Dovecot state, and the
// watcher must still see arrivals afterwards (by inotify, not by the fallback scan).
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ctimeGranularity, MaildirWatcher } from '../../bench/lib/maildir-watch.ts';
import { SENDER, template, wholeMessage } from '../../bench/lib/messages.ts';
import { LmtpClient } from '../../lmtp-proxy/client.ts';
import { startDovecot } from '../../bench/lib/dovecot.ts';
import { dovecotSkip } from '../helpers/skip.ts';

const skip = dovecotSkip();

t.test('clear() gives Dovecot a fresh mailbox and keeps watching it', { skip }, async (t) => {
  const dovecot = await startDovecot({ users: ['alice'] });
  t.teardown(() => dovecot.stop());
  const client = new LmtpClient({ protocol: 'lmtp', host: '127.0.0.1', port: dovecot.lmtpPort });
  t.teardown(() => client.close());
  const tmpl = template(10 * 1024, 'watch-test');
  const send = async (id: string): Promise<void> => {
    const [r] = await client.deliver({ sender: SENDER, recipients: ['alice@example.test'] }, (async function* () { yield wholeMessage(tmpl, id); })());
    t.equal(r?.outcome, 'delivered', `${id} delivered`);
  };
  await send('first');  // Dovecot creates the Maildir, its index and uidlist
  const maildir = dovecot.maildirOf('alice');
  const before = await stat(maildir);
  t.ok((await readdir(maildir)).some((n) => n.startsWith('dovecot')), 'Dovecot keeps index files in the Maildir');

  const watcher = new MaildirWatcher([maildir], await ctimeGranularity(join(maildir, '..')));
  watcher.start();
  t.teardown(() => watcher.close());
  await send('second');
  t.same(await watcher.waitFor(['second'], 5000), [], 'seen before the reset');
  t.equal(watcher.get('second')?.reconciled, false, 'by inotify');

  await watcher.clear();
  t.same((await readdir(maildir)).sort(), ['cur', 'new', 'tmp'], 'only empty new/ cur/ tmp/ are left: no index, no uidlist');
  for (const sub of ['new', 'cur']) t.same(await readdir(join(maildir, sub)), [], `${sub}/ is empty`);
  const after = await stat(maildir);
  t.same([after.uid, after.gid, after.mode], [before.uid, before.gid, before.mode], 'same owner and mode, so Dovecot can write');
  t.equal(watcher.get('second'), undefined, 'arrivals of the last run are forgotten');

  await send('third');
  t.same(await watcher.waitFor(['third'], 5000), [], 'seen after the reset');
  t.equal(watcher.get('third')?.reconciled, false, 'by inotify: the watch was set up again on the new new/');
  t.equal((await readdir(join(maildir, 'new'))).length, 1, 'one message in the fresh mailbox');
});

// Issue #24: `npm run bench` died at its end with ENOTEMPTY (rmdir …/Maildir) and wrote no
// results: Dovecot still writes its uidlist and index files just after a message's file shows
// in new/, so a recursive rm raced it. A writer process does what Dovecot does there, all
// through the reset; every clear() must still succeed and leave a usable Maildir.
t.test('clear() survives a writer still busy in the Maildir', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-watch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const maildir = join(dir, 'Maildir');
  for (const sub of ['new', 'cur', 'tmp']) await mkdir(join(maildir, sub), { recursive: true });
  // As Dovecot after a delivery: a uidlist lock renamed over the uidlist, an index log, tmp files.
  const writer = spawn(process.execPath, ['-e', `
    const fs = require('node:fs'); const p = require('node:path'); const root = process.argv[1];
    for (let i = 0; ; i++) {
      try { fs.writeFileSync(p.join(root, 'dovecot-uidlist.lock'), String(i)); fs.renameSync(p.join(root, 'dovecot-uidlist.lock'), p.join(root, 'dovecot-uidlist')); } catch {}
      try { fs.writeFileSync(p.join(root, 'dovecot.index.log.' + (i % 50)), 'x'); } catch {}
      try { fs.writeFileSync(p.join(root, 'tmp', String(i % 50)), 'x'); } catch {}
    }`, maildir], { stdio: 'ignore', env: { PATH: process.env.PATH ?? '' } });  // without tap's NODE_OPTIONS
  const exited = new Promise((r) => writer.once('exit', r));
  // SIGKILL: a busy loop never runs a SIGTERM handler.
  t.teardown(async () => { writer.kill('SIGKILL'); await exited; });
  while (!(await readdir(maildir)).includes('dovecot-uidlist')) await new Promise((r) => setTimeout(r, 20));

  const watcher = new MaildirWatcher([maildir], 4, { quietMs: 20, budgetMs: 60 });
  watcher.start();
  t.teardown(() => watcher.close());
  for (let i = 0; i < 30; i++) await watcher.clear();
  t.pass('30 resets while the writer ran, none failed');
  writer.kill('SIGKILL');
  await exited;
  await watcher.clear();  // a quiet mailbox: no more waiting than quietMs
  t.same((await readdir(maildir)).sort(), ['cur', 'new', 'tmp'], 'a fresh Maildir once the writer stopped');
  t.same((await readdir(dir)).sort(), ['Maildir'], 'no old Maildir left beside it');
});
