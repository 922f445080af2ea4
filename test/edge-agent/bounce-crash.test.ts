// kill -9 after the bounce relay took the DSN and the journal recorded it, before the object
// counted the answer: the restarted agent (same state dir) gets the task again and answers
// it from the journal. The relay holds exactly one DSN.
import t from 'tap';
import { join } from 'node:path';
import { runAgent } from './agent-process.ts';
import { bounceTask, msgId, scriptedObject, sendBounce, TOKEN } from './scripted-object.ts';
import { startSmtpSink } from '../helpers/smtp-sink.ts';

t.test('kill -9 after the DSN was journaled: the redelivered task is answered sent, one DSN at the relay', async (t) => {
  const sink = await startSmtpSink();
  t.teardown(() => sink.close());
  const object = await scriptedObject(t);
  const dir = t.testdir({});
  const env = {
    MAILBRIDGE_TOKEN: TOKEN, MAILBRIDGE_WORKER_URL: object.url, MAILBRIDGE_TARGET: 'lmtp://127.0.0.1:1',
    MAILBRIDGE_STATE_DIR: join(dir, 'state'), MAILBRIDGE_NAME: 'dell', MAILBRIDGE_HTTP: 'off',
    MAILBRIDGE_BOUNCE_RELAY: sink.url, MAILBRIDGE_REPORTING_MTA: 'home.example.test',
  };
  const id = msgId(0xdead);
  const task = bounceTask(id, Buffer.from('Subject: lost\r\n'));

  const firstConn = object.connection();
  const first = runAgent(env);
  t.teardown(() => { first.child.kill('SIGKILL'); });
  const c1 = await firstConn;
  t.equal(c1.hello?.bounces, true);
  sendBounce(c1, task);
  // Logged after the journal commit, just before the answer is written to the socket.
  await first.waitEvent('bounce.sent', (e) => e.id === id && e.fromJournal === undefined);
  first.child.kill('SIGKILL');
  t.equal(await first.exit, null, 'killed by the signal');
  t.equal(sink.messages.length, 1, 'the relay has the DSN');
  // The object never counts that answer: for it the task is still open, and it sends it again.

  const secondConn = object.connection();
  const second = runAgent(env);
  t.teardown(() => { second.child.kill('SIGKILL'); });
  const c2 = await secondConn;
  sendBounce(c2, task);
  t.match(await c2.next('bounced'), { type: 'bounced', id, status: 'sent', code: 250 }, 'answered from the journal');
  t.match(await second.waitEvent('bounce.sent', (e) => e.id === id), { fromJournal: true });
  t.equal(sink.messages.length, 1, 'exactly one DSN');
  t.same(sink.messages[0]?.to, ['s@example.net']);

  second.child.kill('SIGTERM');
  t.equal(await second.exit, 0);
});
