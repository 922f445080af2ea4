// With the doveadm check on, a bounce task given up without a refusal asks Dovecot about a
// recipient whose last reply was lost (still marked unsettled in the journal) before bouncing
// it: found, no DSN and `bounced delivered`; not found, the DSN as before. Real Dovecot, its
// LMTP behind a proxy that loses the final reply (reply-cut.ts).
import t, { type Test } from 'tap';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { startAgent } from '../../edge-agent/agent.ts';
import { validateConfig } from '../../edge-agent/agent-config.ts';
import type { AckFrame, RecipientResult } from '../../protocol/wire.ts';
import { startDovecot } from '../../bench/lib/dovecot.ts';
import { dovecotSkip } from '../helpers/skip.ts';
import { startSmtpSink } from '../helpers/smtp-sink.ts';
import { poll } from '../helpers/wait.ts';
import type { LogEvent } from './agent-process.ts';
import { gate, lmtpCut } from './reply-cut.ts';
import { bounceTask, header, msgId, push, scriptedObject, sendBounce, TOKEN } from './scripted-object.ts';

const skip = dovecotSkip();
const KEY = 'doveadm-check-key-0123';
const ALICE = 'alice@example.test';
const mail = (n: number): Buffer => Buffer.from(`From: s@example.net\r\nSubject: hello\r\nMessage-ID: <b${n}@example.net>\r\n\r\nbody ${n}\r\n`);
const givenUp: RecipientResult = { recipient: ALICE, code: 0, enhanced: null, text: 'delivery given up: 5 attempts in a row ended without an answer from the agent', outcome: 'tempfail' };

async function setup(t: Test) {
  const dovecot = await startDovecot({ doveadmApiKey: KEY });
  t.teardown(() => dovecot.stop());
  const cut = await lmtpCut(() => dovecot.lmtpPort);
  t.teardown(() => cut.close());
  const api = await gate(Number(new URL(dovecot.doveadmUrl ?? '').port));
  t.teardown(() => api.close());
  const sink = await startSmtpSink();
  t.teardown(() => sink.close());
  const object = await scriptedObject(t);
  const events: LogEvent[] = [];
  const cfg = validateConfig({
    workerUrl: object.url, token: TOKEN, target: `lmtp://127.0.0.1:${cut.port}`, name: 'dell', heartbeatMs: 1000,
    doveadmUrl: api.url, doveadmApiKey: KEY, bounceRelay: sink.url,
  });
  const connected = object.connection();
  const agent = startAgent(cfg, join(t.testdir(), 'state'), (event, fields = {}) => { events.push({ event, ...fields }); });
  t.teardown(() => agent.stop(1000));
  const c = await connected;
  await poll('doveadm.ready', () => events.some((e) => e.event === 'doveadm.ready'), (ok) => ok);
  // The reply to the final dot is lost: Dovecot stored it, the journal keeps the mark.
  const lostReply = async (n: number): Promise<void> => {
    cut.arm('cut');
    push(c, header(msgId(n), mail(n), [ALICE], 5), mail(n));
    t.match(((await c.next('ack')) as AckFrame).results, [{ recipient: ALICE, outcome: 'tempfail', code: 0 }], 'the reply lost: unknown');
  };
  return { dovecot, sink, c, lostReply, named: (e: string): LogEvent[] => events.filter((x) => x.event === e) };
}

t.test('the reply lost, then given up: Dovecot is asked, holds it: no DSN, answered delivered', { skip }, async (t) => {
  const { dovecot, sink, c, lostReply, named } = await setup(t);
  await lostReply(1);
  sendBounce(c, { ...bounceTask(msgId(1), Buffer.from('Subject: hello\r\n'), [givenUp]), reason: 'attempts' });
  t.match(await c.next('bounced'), { id: msgId(1), status: 'delivered', results: [{ recipient: ALICE, code: 250, text: /found in alice@example\.test's mailboxes/ }] });
  t.equal(sink.messages.length, 0, 'no DSN');
  t.equal((await dovecot.readMessages(ALICE)).length, 1, 'one copy');
  t.match(named('deliver.found'), [{ id: msgId(1), reason: /not bounced/ }]);
});

t.test('the reply lost, the copy gone: Dovecot holds none, the DSN goes out', { skip }, async (t) => {
  const { dovecot, sink, c, lostReply } = await setup(t);
  await lostReply(2);
  const dir = join(dovecot.maildirOf(ALICE), 'new');
  for (const f of await readdir(dir)) await rm(join(dir, f));
  sendBounce(c, { ...bounceTask(msgId(2), Buffer.from('Subject: hello\r\n'), [givenUp]), reason: 'expired' });
  const answer = await c.next('bounced');
  t.match(answer, { id: msgId(2), status: 'sent' });
  t.equal((answer as { results?: unknown }).results, undefined);
  t.equal(sink.messages.length, 1, 'one DSN');
});
