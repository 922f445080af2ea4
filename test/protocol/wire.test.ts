import t from 'tap';
import {
  ackCovers, CUT_MARK, encodeFrame, frameMessageId, MAX_CONTROL_FRAME, MAX_RESULT_TEXT, parseAgentFrame, parseObjectFrame,
  PROTOCOL_VERSION, wireResults,
  type AckFrame, type BouncedFrame, type BounceFrame, type HelloFrame, type MessageFrame, type Outcome,
  type RecipientResult, type RecipientsFrame,
} from '../../protocol/wire.ts';
import { prng } from '../helpers/prng.ts';

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
  // A task's recipients found delivered (the ack was lost): only delivered results; `delivered` needs them.
  const ok: RecipientResult = { recipient: 'a@example.test', code: 250, enhanced: '2.0.0', text: 'Saved', outcome: 'delivered' };
  const found: BouncedFrame = { type: 'bounced', id, status: 'delivered', code: 250, text: 'found', results: [ok] };
  t.same(parseAgentFrame(encodeFrame(found)), found);
  t.same(parseAgentFrame(encodeFrame({ ...bounced, results: [ok] })), { ...bounced, results: [ok] });
  t.equal(parseAgentFrame(JSON.stringify({ ...found, results: undefined })), null, 'delivered without results');
  t.equal(parseAgentFrame(JSON.stringify({ ...found, results: [] })), null);
  t.equal(parseAgentFrame(JSON.stringify({ ...found, results: [{ ...ok, outcome: 'tempfail' }] })), null, 'only delivered results');
  const bounce: BounceFrame = {
    type: 'bounce', id, sender: 's@example.net', receivedAt: 1_700_000_000_000, reason: 'refused',
    results: [{ recipient: 'a@x.test', code: 550, enhanced: '5.1.1', text: 'no such user', outcome: 'permfail' }],
    headers: Buffer.from('Subject: hi\r\n').toString('base64'),
  };
  t.same(parseObjectFrame(encodeFrame(bounce)), bounce);
  t.equal(parseObjectFrame(encodeFrame({ ...bounce, sender: '' })), null, 'never a bounce to the null sender');
  t.equal(parseObjectFrame(encodeFrame({ ...bounce, headers: 'not base64!' })), null);
});

t.test('a delay warning is a bounce frame with reason delayed, which needs retryUntil and only it', async (t) => {
  const warn: BounceFrame = {
    type: 'bounce', id, sender: 's@example.net', receivedAt: 1_700_000_000_000, reason: 'delayed', retryUntil: 1_700_432_000_000,
    results: [{ recipient: 'a@x.test', code: 451, enhanced: '4.3.0', text: 'try later', outcome: 'tempfail' }],
    headers: '',
  };
  t.same(parseObjectFrame(encodeFrame(warn)), warn);
  const { retryUntil: _, ...noUntil } = warn;
  t.equal(parseObjectFrame(encodeFrame(noUntil)), null, 'delayed without retryUntil');
  t.equal(parseObjectFrame(encodeFrame({ ...warn, reason: 'expired' })), null, 'retryUntil on a failure');
  t.equal(parseObjectFrame(encodeFrame({ ...warn, retryUntil: -1 })), null);
  const hello: HelloFrame = { type: 'hello', v: 2, agent: 'dell-1', window: 4, credit: 8 << 20, bounces: true, warnings: true };
  t.same(parseAgentFrame(encodeFrame(hello)), hello, 'hello.warnings: it takes delay warnings');
  t.equal(parseAgentFrame(JSON.stringify({ ...hello, warnings: 'yes' })), null);
});

t.test('frameMessageId names the message of an ack the object cannot accept', async (t) => {
  t.equal(frameMessageId(JSON.stringify({ type: 'ack', id, results: [{ text: 'x'.repeat(5000) }] })), id);
  t.equal(frameMessageId(JSON.stringify({ type: 'credit', id })), null);
  t.equal(frameMessageId('not json'), null);
  const huge = encodeFrame({ type: 'ack', id, results: [{ recipient: 'a@x.test', code: 452, enhanced: null, text: 'x'.repeat(70_000), outcome: 'tempfail' }] });
  t.equal(frameMessageId(huge), id, 'an ack too long to parse still names its message');
  t.equal(frameMessageId(`{"type":"credit","id":"${id}",${' '.repeat(70_000)}}`), null);
});

// What a delivery target may answer, and worse: long multi-line replies, characters JSON
// escapes six-fold (control characters, lone surrogates) or two-fold (quotes, backslashes),
// non-ASCII and astral characters, codes and enhanced codes the wire does not take.
const ALPHABET = ['a', ' ', '"', '\\', '\n', '\x01', '\x7f', 'é', '€', '😀', '\ud800', '\udc00', '\u2028'];

function randomResult(rand: () => number, i: number): RecipientResult {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const length = pick([0, 5, 999, 1000, 1001, 3000]);
  const heavy = pick(ALPHABET);  // most texts lean on one character, to reach the extremes
  let text = '';
  while (text.length < length) text += rand() < 0.7 ? heavy.repeat(1 + Math.floor(rand() * 20)) : pick(ALPHABET);
  return {
    recipient: `user${i}${rand() < 0.3 ? '"\\' : ''}@example.test`,
    code: pick([0, 250, 452, 550, 199, 600, 1000, -1, 2.5]),
    enhanced: pick([null, '2.0.0', '4.2.2', '5.1.1', '9.9.9', '', 'x', '5.1.1 extra']),
    text,
    outcome: pick<Outcome>(['delivered', 'tempfail', 'permfail']),
  };
}

t.test('wireResults: every ack it shapes passes the parser, with 1 to 100 recipients of any reply', async (t) => {
  const id = 'f'.repeat(32);
  let cut = 0;
  for (let seed = 1; seed <= 300; seed++) {
    const rand = prng(seed);
    const n = seed % 4 === 0 ? 100 : 1 + Math.floor(rand() * 100);
    const raw = Array.from({ length: n }, (_, i) => randomResult(rand, i));
    const results = wireResults(raw);
    const encoded = encodeFrame({ type: 'ack', id, results });
    if (parseAgentFrame(encoded) === null) {
      t.fail(`seed ${seed}: ack of ${n} results refused (${encoded.length} chars)`);
      continue;
    }
    if (encoded.length > MAX_CONTROL_FRAME) t.fail(`seed ${seed}: ${encoded.length} chars`);
    for (const [i, r] of results.entries()) {
      const was = raw[i] as RecipientResult;
      if (r.recipient !== was.recipient || r.outcome !== was.outcome) t.fail(`seed ${seed}: recipient or outcome changed`);
      if (r.text !== was.text) {
        cut++;
        if (!r.text.endsWith(CUT_MARK) || !was.text.startsWith(r.text.slice(0, -CUT_MARK.length))) {
          t.fail(`seed ${seed}: a changed text must be a prefix of the original, marked as cut`);
        }
      }
    }
  }
  t.ok(cut > 0, `every ack passed; ${cut} texts were cut`);
});

t.test('wireResults: short valid results pass unchanged; bad codes are mended, outcomes kept', async (t) => {
  const ok: RecipientResult = { recipient: 'a@x.test', code: 452, enhanced: '4.2.2', text: 'mailbox full', outcome: 'tempfail' };
  t.same(wireResults([ok]), [ok]);
  t.same(wireResults([{ ...ok, code: 600, enhanced: '4.2.2 quota' }]), [{ ...ok, code: 0, enhanced: null }]);
  const long = wireResults([{ ...ok, text: 'x'.repeat(5000) }])[0];
  t.equal(long?.text.length, MAX_RESULT_TEXT, 'cut to the per-result limit');
  t.ok(long?.text.endsWith(CUT_MARK));
  const astral = wireResults([{ ...ok, text: '😀'.repeat(600) }])[0]?.text ?? '';
  t.notMatch(astral, /[\ud800-\udbff](?![\udc00-\udfff])/, 'no surrogate pair is split');
});

t.test('wireResults: 100 long replies share the frame, the short ones kept whole', async (t) => {
  const results = Array.from({ length: 100 }, (_, i): RecipientResult => ({
    recipient: `r${i}@x.test`, code: 451, enhanced: '4.3.0', outcome: 'tempfail',
    text: i === 0 ? 'short' : '"\\'.repeat(500),
  }));
  const out = wireResults(results);
  t.equal(out[0]?.text, 'short');
  t.ok(out.slice(1).every((r) => r.text.endsWith(CUT_MARK)));
  t.ok(encodeFrame({ type: 'ack', id, results: out }).length <= MAX_CONTROL_FRAME);
  t.not(parseAgentFrame(encodeFrame({ type: 'ack', id, results: out })), null);
});

t.test('message.auth: optional; when present exactly spf/dkim/dmarc/arc, each an RFC 8601 keyword', async (t) => {
  const base: MessageFrame = { type: 'message', id, attempt: 1, sender: '', recipients: ['a@x.test'], size: 10, sha256: sha, receivedAt: 1 };
  const auth = { spf: 'softfail', dkim: 'pass', dmarc: 'fail', arc: 'none' } as const;
  t.same(parseObjectFrame(encodeFrame({ ...base, auth })), { ...base, auth }, 'carried');
  t.same(parseObjectFrame(encodeFrame(base)), base, 'absent: a v2 object from before');
  for (const bad of [
    { ...auth, dmarc: 'bestguesspass' }, { ...auth, spf: 'PASS' }, { spf: 'pass', dkim: 'pass', dmarc: 'pass' },
    { ...auth, iprev: 'pass' }, 'pass', null, [],
  ]) t.equal(parseObjectFrame(JSON.stringify({ ...base, auth: bad })), null, JSON.stringify(bad));
});

t.test('v2: the message frame\'s prefix (Cloudflare\'s block, not covered by sha256) is checked against size', async (t) => {
  const msg: MessageFrame = { type: 'message', id, attempt: 1, sender: '', recipients: ['a@x.test'], size: 10, sha256: sha, receivedAt: 1, prefix: 4 };
  t.same(parseObjectFrame(encodeFrame(msg)), msg);
  t.same(parseObjectFrame(encodeFrame({ ...msg, prefix: 10 })), { ...msg, prefix: 10 }, 'a block and nothing after it');
  const { prefix: _, ...without } = msg;
  t.same(parseObjectFrame(encodeFrame({ ...msg, prefix: 0 })), without, 'prefix 0 is no prefix');
  for (const prefix of [11, -1, 1.5, '4', null]) {
    t.equal(parseObjectFrame(JSON.stringify({ ...msg, prefix })), null, `prefix ${JSON.stringify(prefix)}`);
  }
});

t.test('v2, bodies in R2: hello.fetch, and a message frame with `fetch` {md5, block} instead of sha256', async (t) => {
  const hello: HelloFrame = { type: 'hello', v: 2, agent: 'dell-1', window: 4, credit: 8 << 20, bounces: true, warnings: true, fetch: true };
  t.same(parseAgentFrame(encodeFrame(hello)), hello);
  const { fetch: _fetch, ...without } = hello;
  t.same(parseAgentFrame(encodeFrame({ ...hello, fetch: false })), without, 'fetch: false is the same as none');
  t.equal(parseAgentFrame(JSON.stringify({ ...hello, fetch: 'yes' })), null, 'a boolean or nothing');
  const block = Buffer.from('Received: from x\r\n\tby cloudflare-email.com\r\n');
  const msg: MessageFrame = {
    type: 'message', id, attempt: 1, sender: '', recipients: ['a@x.test'], size: block.length + 10, receivedAt: 1,
    fetch: { md5: 'c'.repeat(32), block: block.toString('base64') }, prefix: block.length,
  };
  t.same(parseObjectFrame(encodeFrame(msg)), msg);
  const { prefix: _prefix, ...unprefixed } = msg;
  const noBlock: MessageFrame = { ...unprefixed, fetch: { md5: 'c'.repeat(32), block: '' } };
  t.same(parseObjectFrame(encodeFrame(noBlock)), noBlock, 'no block: an empty one');
  const bad: [string, unknown][] = [
    ['both sha256 and fetch', { ...msg, sha256: sha }],
    ['neither', { ...msg, fetch: undefined }],
    ['an MD5 that is not 32 hex digits', { ...msg, fetch: { md5: 'C'.repeat(32), block: msg.fetch?.block } }],
    ['a block that is not base64', { ...msg, fetch: { md5: 'c'.repeat(32), block: '!!!!' } }],
    ['a block of another length than prefix', { ...msg, prefix: block.length - 1 }],
    ['a block with no prefix', { ...msg, prefix: undefined }],
    ['another key', { ...msg, fetch: { ...msg.fetch, url: 'https://evil.test/' } }],
    ['a block over 8 KiB', { ...msg, size: 9000 + 10, prefix: 9000, fetch: { md5: 'c'.repeat(32), block: Buffer.alloc(9000).toString('base64') } }],
  ];
  for (const [why, f] of bad) t.equal(parseObjectFrame(JSON.stringify(f)), null, why);
});
