// Bounce tasks end to end in one process: the scripted object sends `bounce`, the agent
// mails the DSN to a real SMTP server (the bounce relay) and answers `bounced`. Guards
// against a second DSN for a redelivered task, and against a relay that is down or
// refuses being reported as sent.
import t from 'tap';
import { simpleParser } from 'mailparser';
import { msgId, bounceTask, sendBounce } from './scripted-object.ts';
import { inProcess, until } from './in-process.ts';
import { startSmtpSink } from '../helpers/smtp-sink.ts';
import { levelOf } from '../../protocol/log-levels.ts';

const headers = Buffer.concat([Buffer.from('From: s@example.net\r\nTo: alice@example.test\r\nSubject: caf'), Buffer.from([0xe9, 0xff]), Buffer.from('\r\n')]);

async function setup(t: Tap) {
  const sink = await startSmtpSink();
  t.teardown(() => sink.close());
  const env = await inProcess(t);
  return { sink, ...env };
}
type Tap = Parameters<typeof inProcess>[0];

t.test('hello says bounces only with a bounce relay', async (t) => {
  const { agent, object } = await setup(t);
  const conn = object.connection();
  agent();
  t.same((await conn).hello, { type: 'hello', v: 2, agent: 'test-agent', window: 16, credit: 8 << 20, fetch: true, fetchSession: true }, 'no bounces: true');
});

t.test('a bounce task: one DSN from <> to the sender at the relay, answered sent', async (t) => {
  const { agent, object, sink, named } = await setup(t);
  const conn = object.connection();
  agent({ bounceRelay: sink.url, reportingMta: 'home.example.test' });
  const c = await conn;
  t.equal(c.hello?.bounces, true);
  const id = msgId(0xb1);
  sendBounce(c, bounceTask(id, headers));
  t.match(await c.next('bounced'), { type: 'bounced', id, status: 'sent', code: 250 });
  t.equal(sink.messages.length, 1);
  const m = sink.messages[0];
  t.equal(m?.from, '', 'MAIL FROM:<>: a bounce never bounces');
  t.same(m?.to, ['s@example.net']);
  const parsed = await simpleParser(m?.body ?? Buffer.alloc(0));
  t.equal(parsed.from?.value[0]?.address, 'MAILER-DAEMON@home.example.test');
  t.equal(parsed.subject, 'Undelivered Mail Returned to Sender');
  t.match(parsed.text, /Final-Recipient: rfc822; alice@example\.test\s+Action: failed\s+Status: 5\.1\.1/);
  t.ok(parsed.attachments[0]?.content.equals(headers), 'the original header bytes, 8-bit included');
  t.match(named('bounce.sent'), [{ id, to: 's@example.net', relay: sink.url, code: 250, reason: 'refused' }]);
});

t.test('the same task twice (a redelivery): still one DSN, both answered sent', async (t) => {
  const { agent, object, sink, named } = await setup(t);
  const conn = object.connection();
  agent({ bounceRelay: sink.url });
  const c = await conn;
  const id = msgId(0xb2);
  sendBounce(c, bounceTask(id, headers));
  t.match(await c.next('bounced'), { id, status: 'sent', code: 250 });
  sendBounce(c, bounceTask(id, headers));
  const again = await c.next('bounced');
  t.match(again, { id, status: 'sent', code: 250 }, 'answered from the journal');
  // Both at once too: the second waits for the first, then finds it journaled.
  const id2 = msgId(0xb3);
  sendBounce(c, bounceTask(id2, headers));
  sendBounce(c, bounceTask(id2, headers));
  t.match(await c.next('bounced'), { id: id2, status: 'sent' });
  t.match(await c.next('bounced'), { id: id2, status: 'sent' });
  t.equal(sink.messages.length, 2, 'one DSN per task');
  t.equal(named('bounce.sent').filter((e) => e.fromJournal === true).length, 2);
});

t.test('relay down: deferred; relay 550: failed; relay 451: deferred', async (t) => {
  const { agent, object, sink, named } = await setup(t);
  const conn = object.connection();
  agent({ bounceRelay: sink.url });
  const c = await conn;

  sink.refuse = { code: 550, text: 'no such sender domain' };
  sendBounce(c, bounceTask(msgId(0xc1), headers));
  t.match(await c.next('bounced'), { id: msgId(0xc1), status: 'failed', code: 550, text: /no such sender domain/ });
  sink.refuse = { code: 451, text: 'try later' };
  sendBounce(c, bounceTask(msgId(0xc2), headers));
  t.match(await c.next('bounced'), { id: msgId(0xc2), status: 'deferred', code: 451, text: /try later/ });
  t.match(named('bounce.failed'), [{ id: msgId(0xc1), code: 550 }]);
  t.match(named('bounce.deferred'), [{ id: msgId(0xc2), code: 451 }]);

  await sink.close();
  sendBounce(c, bounceTask(msgId(0xc3), headers));
  t.match(await c.next('bounced'), { id: msgId(0xc3), status: 'deferred', code: 0, text: /ECONNECTION/ });
  t.equal(sink.messages.length, 0, 'nothing was sent');
});

t.test('a bounce task between the chunks of a message does not disturb it', async (t) => {
  const { agent, object, sink, peer } = await setup(t);
  const conn = object.connection();
  agent({ bounceRelay: sink.url });
  const c = await conn;
  const { header } = await import('./scripted-object.ts');
  const { encodeFrame } = await import('../../protocol/wire.ts');
  const body = Buffer.from('Subject: x\r\n\r\nhello\r\n');
  const id = msgId(0xd1);
  c.ws.send(encodeFrame(header(id, body, ['alice@example.test'])));
  c.ws.send(body.subarray(0, 5), { binary: true });
  sendBounce(c, bounceTask(msgId(0xd2), headers));
  c.ws.send(body.subarray(5), { binary: true });
  c.ws.send(encodeFrame({ type: 'end', id, chunks: 2 }));
  t.match(await c.next('ack'), { id, results: [{ outcome: 'delivered' }] });
  t.match(await c.next('bounced'), { id: msgId(0xd2), status: 'sent' });
  await until('stored', () => peer.stored.length === 1);
  t.ok(peer.stored[0]?.includes(body), 'the message intact');
});

t.test('a delay warning and a later bounce of one message: one DSN each, each redelivery answered from its own journal entry', async (t) => {
  const { agent, object, sink, named } = await setup(t);
  const conn = object.connection();
  agent({ bounceRelay: sink.url, reportingMta: 'home.example.test' });
  const c = await conn;
  t.equal(c.hello?.warnings, true, 'hello says warnings with a bounce relay');
  const id = msgId(0xe1);
  const pending = [{ recipient: 'alice@example.test', code: 451, enhanced: '4.3.0', text: 'try later', outcome: 'tempfail' as const }];
  const warn = { ...bounceTask(id, headers, pending), reason: 'delayed' as const, retryUntil: Date.UTC(2026, 11, 3, 12) };
  sendBounce(c, warn);
  t.match(await c.next('bounced'), { id, status: 'sent', code: 250 });
  sendBounce(c, warn);
  t.match(await c.next('bounced'), { id, status: 'sent', code: 250 }, 'the warning redelivered: from the journal');
  t.equal(sink.messages.length, 1, 'one warning');
  sendBounce(c, bounceTask(id, headers, [{ ...pending[0]!, text: 'still later' }]));
  t.match(await c.next('bounced'), { id, status: 'sent', code: 250 });
  sendBounce(c, { ...bounceTask(id, headers), reason: 'expired' });
  t.match(await c.next('bounced'), { id, status: 'sent' });
  t.equal(sink.messages.length, 2, 'the warning journaled did not stop the bounce, and the bounce went once');
  const [w, b] = await Promise.all(sink.messages.map((m) => simpleParser(m.body)));
  t.equal(w?.subject, 'Delayed Mail (still being retried)');
  t.match(w?.text, /Action: delayed\s+Status: 4\.3\.0[\s\S]*Will-Retry-Until: Thu, 03 Dec 2026 12:00:00 \+0000/);
  t.equal(b?.subject, 'Undelivered Mail Returned to Sender');
  t.match(named('warning.sent'), [{ id, reason: 'delayed' }, { id, fromJournal: true }]);
  t.match(named('bounce.sent'), [{ id, reason: 'refused' }, { id, fromJournal: true }]);
});

t.test('issue #22: the DSN shows no name of the home network: not the LMTP target\'s, not the bounce relay\'s', async (t) => {
  const { agent, object, sink } = await setup(t);
  const conn = object.connection();
  // Nothing is delivered here: the target's name only has to be one no pattern would catch.
  agent({ bounceRelay: sink.url, reportingMta: 'home.example.test', target: 'lmtp://mailstore.example.test:2424' });
  const c = await conn;
  const id = msgId(0xb22);
  sendBounce(c, bounceTask(id, headers, [
    { recipient: 'alice@example.test', code: 0, enhanced: null, text: 'getaddrinfo ENOTFOUND mailstore.example.test', outcome: 'tempfail' },
    { recipient: 'bob@example.test', code: 0, enhanced: null, text: `connect ECONNREFUSED ${sink.url.replace(/^smtp:\/\//, '')}`, outcome: 'tempfail' },
  ]));
  t.match(await c.next('bounced'), { id, status: 'sent' });
  const body = sink.messages[0]?.body.toString('latin1') ?? '';
  t.match(body, /<alice@example\.test>: getaddrinfo ENOTFOUND \[hidden\]/);
  t.notOk(body.includes('mailstore'), 'not the LMTP target\'s name');
  t.notOk(body.includes(sink.url.replace(/^smtp:\/\//, '')), 'not the bounce relay\'s host and port');
});

t.test('a reportingMta of the home network (every DSN names it) is warned about at start', async (t) => {
  const { agent, object, sink, named } = await setup(t);
  agent({ bounceRelay: sink.url, reportingMta: 'nas.lan' });
  await object.connection();
  t.match(named('bounce.private-name'), [{ reportingMta: 'nas.lan', hint: /MAILBRIDGE_REPORTING_MTA/ }]);
  t.equal(levelOf('bounce.private-name'), 'warning');
  agent({ bounceRelay: sink.url, reportingMta: 'mx.example.org' });
  await object.connection();
  t.equal(named('bounce.private-name').length, 1, 'a public name: no warning');
});
