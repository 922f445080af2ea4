// A message the agent delivered whose ack was lost, then given up by the object without a
// refusal (`attempts`: too many leases ended unanswered; `expired`): the bounce task must not
// tell the sender it failed. The agent asks its journal first: recipients it delivered are
// left out of the DSN and named in the answer; all of them delivered, no DSN at all and the
// answer is `bounced delivered` (the object settles the message as acked). One outcome each.
import t from 'tap';
import { simpleParser } from 'mailparser';
import { encodeFrame, MAX_CONTROL_FRAME, parseAgentFrame, type BouncedFrame, type RecipientResult } from '../../protocol/wire.ts';
import { bounceTask, header, msgId, push, sendBounce } from './scripted-object.ts';
import { inProcess, until } from './in-process.ts';
import { startSmtpSink } from '../helpers/smtp-sink.ts';

const body = Buffer.from('From: s@example.net\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nhello\r\n');
const headers = Buffer.from('From: s@example.net\r\nTo: alice@example.test\r\nSubject: hi\r\n');
const givenUp = (recipient: string): RecipientResult =>
  ({ recipient, code: 0, enhanced: null, text: 'delivery given up: 5 attempts in a row ended without an answer from the agent', outcome: 'tempfail' });

async function setup(t: Parameters<typeof inProcess>[0]) {
  const sink = await startSmtpSink();
  t.teardown(() => sink.close());
  const env = await inProcess(t);
  const conn = env.object.connection();
  env.agent({ bounceRelay: sink.url, reportingMta: 'home.example.test' });
  return { sink, c: await conn, ...env };
}

for (const reason of ['attempts', 'expired'] as const) {
  t.test(`delivered, its ack lost, then given up (${reason}): no DSN, answered delivered with the journal's results`, async (t) => {
    const { c, sink, peer, named } = await setup(t);
    const id = msgId(0x51 + (reason === 'expired' ? 1 : 0));
    push(c, header(id, body, ['alice@example.test'], 5), body);
    // The ack went out; the object never read it (the connection was lost): only the journal knows.
    t.match(await c.next('ack'), { id, results: [{ recipient: 'alice@example.test', outcome: 'delivered' }] });
    sendBounce(c, { ...bounceTask(id, headers, [givenUp('alice@example.test')]), reason });
    const answer = await c.next('bounced');
    t.match(answer, { type: 'bounced', id, status: 'delivered', code: 250, results: [{ recipient: 'alice@example.test', code: 250, outcome: 'delivered' }] });
    t.equal(sink.messages.length, 0, 'no DSN: the sender is not told it failed');
    t.equal(peer.stored.length, 1, 'one copy in the mailbox');
    t.match(named('delivery.sent').filter((e) => e.relay === 'journal'), [{ id, to: 'alice@example.test', status: 'sent', note: /found in the journal when the bounce task came/ }]);
    t.match(named('bounce.delivered'), [{ id, reason }]);
  });
}

t.test('two recipients, one delivered (ack lost) and one not: the DSN names only the other', async (t) => {
  const { c, sink, peer } = await setup(t);
  peer.finalReply = (r: string) => (r.startsWith('bob') ? '451 4.2.0 mailbox busy\r\n' : '250 2.0.0 Ok saved\r\n');
  const id = msgId(0x61);
  push(c, header(id, body, ['alice@example.test', 'bob@example.test'], 5), body);
  t.match(await c.next('ack'), { id, results: [{ outcome: 'delivered' }, { outcome: 'tempfail' }] });
  sendBounce(c, { ...bounceTask(id, headers, [givenUp('alice@example.test'), givenUp('bob@example.test')]), reason: 'attempts' });
  const answer = await c.next('bounced');
  t.match(answer, { id, status: 'sent', code: 250, results: [{ recipient: 'alice@example.test', outcome: 'delivered' }] });
  t.equal((answer as { results?: unknown[] }).results?.length, 1, 'only the delivered one named');
  t.equal(sink.messages.length, 1, 'one DSN');
  const text = (await simpleParser(sink.messages[0]?.body ?? Buffer.alloc(0))).text ?? '';
  t.match(text, /Final-Recipient: rfc822; bob@example\.test/);
  t.notMatch(text, /Final-Recipient: rfc822; alice@example\.test/, 'the delivered recipient is not in the DSN');
  // The answer lost too, the task again: the same answer from the journal, still one DSN.
  sendBounce(c, { ...bounceTask(id, headers, [givenUp('alice@example.test'), givenUp('bob@example.test')]), reason: 'attempts' });
  t.match(await c.next('bounced'), { id, status: 'sent', results: [{ recipient: 'alice@example.test' }] });
  t.equal(sink.messages.length, 1);
});

t.test('a refused message is bounced as today, whatever the journal says', async (t) => {
  const { c, sink } = await setup(t);
  const id = msgId(0x71);
  push(c, header(id, body, ['alice@example.test']), body);
  await c.next('ack');
  sendBounce(c, bounceTask(id, headers));
  const answer = await c.next('bounced');
  t.match(answer, { id, status: 'sent' });
  t.equal((answer as { results?: unknown }).results, undefined);
  await until('the DSN', () => sink.messages.length === 1);
});

t.test('100 recipients found delivered with long replies: the answer still fits one control frame', async (t) => {
  const { c, sink, peer } = await setup(t);
  // Quotes cost two characters each in JSON: the results alone would be far over the frame limit.
  peer.finalReply = () => `250 2.0.0 ${'"'.repeat(900)}\r\n`;
  const id = msgId(0x81);
  const to = Array.from({ length: 100 }, (_, i) => `u${i}@example.test`);
  push(c, header(id, body, to, 5), body);
  await c.next('ack');
  sendBounce(c, { ...bounceTask(id, headers, to.map(givenUp)), reason: 'attempts' });
  const answer = await c.next('bounced');
  t.match(answer, { id, status: 'delivered' });
  t.equal((answer as { results?: unknown[] }).results?.length, 100);
  t.ok(encodeFrame(answer as BouncedFrame).length <= MAX_CONTROL_FRAME, 'within MAX_CONTROL_FRAME');
  t.ok(parseAgentFrame(encodeFrame({ ...(answer as BouncedFrame), text: '"'.repeat(1000) })), 'even beside the longest reply text');
  t.equal(sink.messages.length, 0);
});
