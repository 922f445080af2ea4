import t from 'tap';
import { formatReply, parseReply, parseReplyLine, replyText } from '../../lmtp-proxy/reply.ts';
import { LineReader, ReplyReader } from '../../lmtp-proxy/line-reader.ts';

t.test('reply lines', async (t) => {
  t.same(parseReplyLine('250-PIPELINING'), { code: 250, more: true, text: 'PIPELINING' });
  t.same(parseReplyLine('250 ok'), { code: 250, more: false, text: 'ok' });
  t.same(parseReplyLine('354'), { code: 354, more: false, text: '' }, 'code alone ends a reply');
  for (const bad of ['', '25', '2500 x', '250x', 'abc', '600 x', '199 x', '260 x', ' 250 x', '25O ok']) {
    t.equal(parseReplyLine(bad), null, JSON.stringify(bad));
  }
});

t.test('multiline replies', async (t) => {
  const r = parseReply(['250-mx.example hello', '250-PIPELINING', '250 CHUNKING'], true);
  t.same(r, { code: 250, enhanced: null, lines: ['mx.example hello', 'PIPELINING', 'CHUNKING'] });
  t.equal(parseReply(['250-a', '251 b'], true), null, 'mixed codes');
  t.equal(parseReply(['250-a', '250-b'], true), null, 'no last line');
  t.equal(parseReply(['250 a', '250 b'], true), null, 'a last line before the end');
  t.equal(parseReply([], true), null);
  t.equal(parseReply(['250-a', 'garbage', '250 b'], true), null);
});

t.test('enhanced status codes', async (t) => {
  const r = parseReply(['550-5.1.1 no such user', '550 5.1.1 here'], true);
  t.equal(r?.enhanced, '5.1.1');
  t.equal(r && replyText(r), 'no such user here', 'stripped from every line that repeats it');
  t.same(r?.lines, ['5.1.1 no such user', '5.1.1 here'], 'lines keep it');
  t.equal(parseReply(['452 4.2.2'], true)?.enhanced, '4.2.2', 'code alone');
  t.equal(parseReply(['250 5.1.1 odd'], true)?.enhanced, null, 'class must match the reply code');
  t.equal(parseReply(['250 2.1.5x'], true)?.enhanced, null, 'must end at a space');
  t.equal(parseReply(['250 2.1234.5 x'], true)?.enhanced, null, 'subject has at most 3 digits');
  const off = parseReply(['250 2.1.5 ok'], false);
  t.equal(off?.enhanced, null, 'not parsed unless the server offers ENHANCEDSTATUSCODES');
  t.equal(off && replyText(off), '2.1.5 ok');
});

t.test('formatReply is the wire form', async (t) => {
  t.equal(formatReply({ code: 250, enhanced: null, lines: ['a', 'b'] }), '250-a\r\n250 b\r\n');
  t.equal(formatReply({ code: 421, enhanced: null, lines: [] }), '421 \r\n');
  const again = parseReply(['452-4.2.2 over', '452 4.2.2 quota'], true);
  t.equal(again && formatReply(again), '452-4.2.2 over\r\n452 4.2.2 quota\r\n');
});

t.test('line reader: split CRLF, bare LF, over-long lines', async (t) => {
  const r = new LineReader(10);
  const ok = (lines: string[]) => ({ lines, tooLong: false });
  t.same(r.push(Buffer.from('250-a\r')), ok([]));
  t.same(r.push(Buffer.from('\n250 b\n2')), ok(['250-a', '250 b']));
  t.same(r.push(Buffer.from('50 c\r\n')), ok(['250 c']));
  t.same(r.push(Buffer.from('0123456789')), { lines: [], tooLong: true }, 'a partial line already over the limit');
  t.same(new LineReader(10).push(Buffer.from('012345678\r\n')), { lines: [], tooLong: true }, 'CRLF counts');
  t.same(new LineReader(10).push(Buffer.from('01234567\r\n')), ok(['01234567']));
  t.same(new LineReader(10).push(Buffer.from('250 a\r\n0123456789\r\n250 b\r\n')), { lines: ['250 a'], tooLong: true },
    'lines before an over-long one are kept, none after it');
});

t.test('reply reader keeps replies completed before a violation', async (t) => {
  const r = new ReplyReader();
  t.same(r.push(Buffer.from('250-a\r\n250')), { replies: [], error: null });
  const out = r.push(Buffer.from(' b\r\n250 c\r\nHTTP/1.1 400\r\n'));
  t.same(out.replies.map((x) => x.lines), [['a', 'b'], ['c']]);
  t.match(out.error, /malformed reply line "HTTP/);
  t.match(new ReplyReader().push(Buffer.from('250-x\r\n'.repeat(101))).error, /longer than 100 lines/);
  t.match(new ReplyReader().push(Buffer.from('250 ' + 'x'.repeat(5000))).error, /longer than 4096 bytes/);
  const long = new ReplyReader().push(Buffer.from(`250 stored\r\n250 ${'x'.repeat(5000)}\r\n`));
  t.same([long.replies.map((x) => x.lines), long.error], [[['stored']], 'reply line longer than 4096 bytes'], 'also before an over-long line');
});
