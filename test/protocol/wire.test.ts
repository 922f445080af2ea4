import t from 'tap';
import {
  ackCovers, encodeFrame, frameMessageId, parseAgentFrame, parseObjectFrame, PROTOCOL_VERSION,
  type AckFrame, type BouncedFrame, type BounceFrame, type HelloFrame, type MessageFrame, type RecipientsFrame,
} from '../../protocol/wire.ts';

const id = 'a'.repeat(32);
const sha = 'b'.repeat(64);

t.test('valid frames round-trip through encode and parse', async (t) => {
  const hello: HelloFrame = { type: 'hello', v: PROTOCOL_VERSION, agent: 'dell-1', window: 4, credit: 8 << 20 };
  t.same(parseAgentFrame(encodeFrame(hello)), hello);
  const ack: AckFrame = { type: 'ack', id, results: [{ recipient: 'a@x.test', code: 250, enhanced: '2.0.0', text: 'ok', outcome: 'delivered' }] };
  t.same(parseAgentFrame(encodeFrame(ack)), ack);
  const msg: MessageFrame = { type: 'message', id, attempt: 1, sender: '', recipients: ['a@x.test'], size: 10, sha256: sha, receivedAt: 1 };
  t.same(parseObjectFrame(encodeFrame(msg)), msg, 'null sender <> is the empty string');
});

t.test('rejects malformed, unknown and hostile frames', async (t) => {
  const bad = [
    'not json', '[]', 'null', '{"type":"nope"}',
    JSON.stringify({ type: 'hello', v: 1, agent: 'a b', window: 4, credit: 0 }),
    JSON.stringify({ type: 'hello', v: 1, agent: 'a', window: 0, credit: 0 }),
    JSON.stringify({ type: 'hello', v: 1, agent: 'a', window: 4, credit: 2 ** 40 }),
    JSON.stringify({ type: 'credit', bytes: -1 }),
    JSON.stringify({ type: 'ack', id: 'short', results: [] }),
    JSON.stringify({ type: 'ack', id, results: [] }),
    JSON.stringify({ type: 'ack', id, results: [{ recipient: 'a@x', code: 250, enhanced: null, text: 'x', outcome: 'maybe' }] }),
    JSON.stringify({ type: 'nack', id, reason: 'whatever', text: '' }),
    JSON.stringify({ type: 'message', id, attempt: 1, sender: 'x\r\nRCPT TO:<evil>', recipients: ['a@x'], size: 1, sha256: sha, receivedAt: 1 }),
    JSON.stringify({ type: 'message', id, attempt: 1, sender: '', recipients: ['<a@x>'], size: 1, sha256: sha, receivedAt: 1 }),
    JSON.stringify({ type: 'message', id, attempt: 1, sender: '', recipients: [], size: 1, sha256: sha, receivedAt: 1 }),
    'x'.repeat(70_000),
  ];
  for (const b of bad) {
    t.equal(parseAgentFrame(b), null, `agent: ${b.slice(0, 60)}`);
    t.equal(parseObjectFrame(b), null, `object: ${b.slice(0, 60)}`);
  }
});

t.test('an ack must answer each recipient exactly once', async (t) => {
  const r = (recipient: string) => ({ recipient, code: 250, enhanced: null, text: '', outcome: 'delivered' as const });
  t.ok(ackCovers([r('a'), r('b')], ['b', 'a']));
  t.notOk(ackCovers([r('a')], ['a', 'b']), 'missing one');
  t.notOk(ackCovers([r('a'), r('a')], ['a', 'b']), 'duplicate');
  t.notOk(ackCovers([r('a'), r('c')], ['a', 'b']), 'stranger');
});

t.test('v2 frames round-trip, and each field is checked', async (t) => {
  const hello: HelloFrame = { type: 'hello', v: 2, agent: 'dell-1', window: 4, credit: 8 << 20, bounces: true };
  t.same(parseAgentFrame(encodeFrame(hello)), hello);
  const list: RecipientsFrame = { type: 'recipients', digest: sha, part: 0, parts: 2, delimiter: '+', entries: ['alice@example.test', '@catchall.test'] };
  t.same(parseAgentFrame(encodeFrame(list)), list);
  t.equal(parseAgentFrame(encodeFrame({ ...list, part: 2 })), null, 'part beyond parts');
  t.equal(parseAgentFrame(encodeFrame({ ...list, entries: ['Alice@example.test'] })), null, 'entries are lowercase');
  t.equal(parseAgentFrame(encodeFrame({ ...list, entries: ['alice'] })), null, 'an entry needs a domain');
  t.equal(parseAgentFrame(encodeFrame({ ...list, delimiter: '++' })), null, 'one delimiter character');
  t.same(parseAgentFrame('{"type":"retry"}'), { type: 'retry' });
  const bounced: BouncedFrame = { type: 'bounced', id, status: 'sent', code: 250, text: '2.0.0 Ok: queued' };
  t.same(parseAgentFrame(encodeFrame(bounced)), bounced);
  t.equal(parseAgentFrame(JSON.stringify({ ...bounced, status: 'lost' })), null);
  const bounce: BounceFrame = {
    type: 'bounce', id, sender: 's@example.net', receivedAt: 1_700_000_000_000, reason: 'refused',
    results: [{ recipient: 'a@x.test', code: 550, enhanced: '5.1.1', text: 'no such user', outcome: 'permfail' }],
    headers: Buffer.from('Subject: hi\r\n').toString('base64'),
  };
  t.same(parseObjectFrame(encodeFrame(bounce)), bounce);
  t.equal(parseObjectFrame(encodeFrame({ ...bounce, sender: '' })), null, 'never a bounce to the null sender');
  t.equal(parseObjectFrame(encodeFrame({ ...bounce, headers: 'not base64!' })), null);
});

t.test('frameMessageId names the message of an ack the object cannot accept', async (t) => {
  t.equal(frameMessageId(JSON.stringify({ type: 'ack', id, results: [{ text: 'x'.repeat(5000) }] })), id);
  t.equal(frameMessageId(JSON.stringify({ type: 'credit', id })), null);
  t.equal(frameMessageId('not json'), null);
});

