// The bench's mailbox reset: every cell must start from the same Dovecot state, and the
// watcher must still see arrivals afterwards (by inotify, not by the fallback scan).
import t from 'tap';
import { readdir, stat } from 'node:fs/promises';
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
