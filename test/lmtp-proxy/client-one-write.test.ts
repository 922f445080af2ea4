// A small body goes out with its envelope: MAIL, every RCPT and BDAT LAST with the body in one
// write (lmtp-proxy/client.ts #transact). The number of final replies then depends on the RCPT
// replies read in the same breath; these scripted servers answer in every shape that can come.
import t from 'tap';
import { brief, chunks, hello, raw, type Peer } from '../helpers/lmtp-script.ts';

const CAPS = ['PIPELINING', 'CHUNKING'];
const BODY = 'Subject: s\r\n\r\n.a dot\r\nRSET\r\nQUIT\r\n';
const N = Buffer.byteLength(BODY);
const TWO = { sender: 's@example.net', recipients: ['a@example.org', 'b@example.org'] };
const small = { size: N };

/** The whole pipelined write: the envelope lines, then the BDAT LAST chunk. */
async function oneWrite(p: Peer, rcpts: number): Promise<{ lines: string[]; data: string }> {
  const lines: string[] = [];
  for (let i = 0; i < rcpts + 2; i++) lines.push(await p.line());
  const n = Number(/^BDAT (\d+) LAST$/.exec(lines[lines.length - 1] ?? '')?.[1] ?? NaN);
  return { lines, data: (await p.bytes(n)).toString('latin1') };
}

t.test('MAIL, every RCPT, BDAT LAST and the body arrive before any reply is sent, in one write', async (t) => {
  let got: { lines: string[]; data: string } | null = null;
  const { peers, client } = await raw(t, async (p) => {
    await hello(p, ...CAPS);
    got = await oneWrite(p, 2);
    p.send('250 ok\r\n250 ok\r\n250 ok\r\n250 a saved\r\n250 b saved\r\n');
  });
  const res = await client().deliver(TWO, chunks('Subject: s\r\n\r\n', '.a dot\r\n', 'RSET\r\nQUIT\r\n'), small);
  t.same(res.map((r) => [r.text, r.outcome]), [['a saved', 'delivered'], ['b saved', 'delivered']]);
  t.same(got, { lines: ['MAIL FROM:<s@example.net>', 'RCPT TO:<a@example.org>', 'RCPT TO:<b@example.org>', `BDAT ${N} LAST`], data: BODY });
  t.equal(peers[0]?.chunks.length, 2, 'after LHLO, one segment: the whole transaction');
});

// Every reply of the transaction in one segment: the client must count the final replies from
// the RCPT replies before them while it reads them, not after.
const shapes = [
  { name: 'both accepted', replies: '250 ok\r\n250 ok\r\n250 ok\r\n250 a saved\r\n250 b saved\r\n',
    want: [[250, 'a saved', 'delivered'], [250, 'b saved', 'delivered']] },
  { name: 'the first refused: one final reply, for the second', replies: '250 ok\r\n550 5.1.1 no a\r\n250 ok\r\n250 b saved\r\n',
    want: [[550, 'no a', 'permfail'], [250, 'b saved', 'delivered']] },
  { name: 'the second refused', replies: '250 ok\r\n250 ok\r\n450 4.2.1 later\r\n452 4.2.2 a over quota\r\n',
    want: [[452, 'a over quota', 'tempfail'], [450, 'later', 'tempfail']] },
  { name: 'both refused: one refusal of BDAT', replies: '250 ok\r\n550 no a\r\n550 no b\r\n503 5.5.0 No valid recipients\r\n',
    want: [[550, 'no a', 'permfail'], [550, 'no b', 'permfail']], rset: true },
  { name: 'MAIL refused: RCPT and BDAT refused after it', replies: '452 4.3.1 busy\r\n503 5.5.0 MAIL needed first\r\n503 5.5.0 MAIL needed first\r\n503 5.5.0 MAIL needed first\r\n',
    want: [[452, 'busy', 'tempfail'], [452, 'busy', 'tempfail']], rset: true },
] as const;

for (const shape of shapes) {
  t.test(`replies in one segment, ${shape.name}; the connection stays in step`, async (t) => {
    const { peers, client } = await raw(t, async (p) => {
      await hello(p, 'ENHANCEDSTATUSCODES', ...CAPS);
      for (let m = 0; m < 2; m++) {
        await oneWrite(p, 2);
        p.send(shape.replies);
        if ('rset' in shape) { t.equal(await p.line(), 'RSET'); p.send('250 reset\r\n'); }
      }
    });
    const c = client();
    for (let m = 0; m < 2; m++) {
      const res = await c.deliver(TWO, chunks(BODY), small);
      t.same(res.map((r) => [r.code, r.text, r.outcome]), shape.want, `message ${m + 1}`);
    }
    t.equal(peers.length, 1, 'one connection for both: no timeout, no stray reply');
  });
}

t.test('a 2xx to BDAT LAST with no recipient accepted breaks the protocol: the connection is dropped', async (t) => {
  const { peers, client } = await raw(t, async (p, n) => {
    await hello(p, ...CAPS);
    await oneWrite(p, 2);
    p.send(n === 1 ? '250 ok\r\n550 no\r\n550 no\r\n250 stored anyway\r\n' : '250 ok\r\n250 ok\r\n250 ok\r\n250 a\r\n250 b\r\n');
  });
  const c = client();
  t.same((await c.deliver(TWO, chunks(BODY), small)).map((r) => r.outcome), ['permfail', 'permfail']);
  t.same((await c.deliver(TWO, chunks(BODY), small)).map((r) => r.outcome), ['delivered', 'delivered']);
  t.equal(peers.length, 2, 'the next message on a new connection');
  t.notOk(peers[0]?.lines.includes('RSET'), 'no RSET on a connection out of step');
});

t.test('a body larger than its size said goes the usual way, bytes exact', async (t) => {
  const big = 'x'.repeat(70 * 1024);
  let data = '';
  const { peers, client } = await raw(t, async (p) => {
    await hello(p, ...CAPS);
    await p.line();
    await p.line();
    p.send('250 ok\r\n250 ok\r\n');
    const bdat = await p.line();
    data = (await p.bytes(Number(/^BDAT (\d+) LAST$/.exec(bdat)?.[1]))).toString('latin1');
    p.send('250 saved\r\n');
  });
  const res = await client().deliver({ sender: '', recipients: ['a@example.org'] }, chunks(BODY, big), small);
  t.same(res.map((r) => r.outcome), ['delivered']);
  t.equal(data, BODY + big);
  t.same(peers[0]?.lines, ['LHLO client.test', 'MAIL FROM:<>', 'RCPT TO:<a@example.org>', `BDAT ${N + big.length} LAST`]);
});

t.test('a small body that fails as it is read: ESTREAM, nothing sent, the connection kept', async (t) => {
  const { peers, client } = await raw(t, async (p) => {
    await hello(p, ...CAPS);
    await oneWrite(p, 1);
    p.send('250 ok\r\n250 ok\r\n250 saved\r\n');
  });
  async function* broken(): AsyncGenerator<Uint8Array> { yield Buffer.from('Subject: s\r\n'); throw new Error('disk on fire'); }
  const c = client();
  const one = { sender: '', recipients: ['a@example.org'] };
  t.same(brief(await c.deliver(one, broken(), small)), [['a@example.org', 0, null, 'ESTREAM: reading the message body failed: disk on fire', 'tempfail']]);
  t.same((await c.deliver(one, chunks(BODY), small)).map((r) => r.outcome), ['delivered']);
  t.equal(peers.length, 1, 'the same connection');
  t.same(peers[0]?.lines, ['LHLO client.test', 'MAIL FROM:<>', 'RCPT TO:<a@example.org>', `BDAT ${N} LAST`], 'one transaction on the wire');
});

t.test('a kept connection gone before MAIL is answered: the same bytes once more on a new connection', async (t) => {
  const data: string[] = [];
  const { peers, client } = await raw(t, async (p, n) => {
    await hello(p, ...CAPS);
    const first = await oneWrite(p, 1);
    data.push(first.data);
    p.send(`250 ok\r\n250 ok\r\n250 saved ${n}\r\n`);
    if (n > 1) return;
    await p.line();  // the next transaction, never answered
    p.socket.end();
  });
  const c = client();
  const one = { sender: '', recipients: ['a@example.org'] };
  t.equal((await c.deliver(one, chunks(BODY), small))[0]?.text, 'saved 1');
  const again = await c.deliver(one, chunks('Subject: two\r\n\r\n2\r\n'), { size: 19 });
  t.same(again.map((r) => [r.text, r.outcome]), [['saved 2', 'delivered']]);
  t.equal(peers.length, 2, 'one new connection');
  t.same(data, [BODY, 'Subject: two\r\n\r\n2\r\n'], 'the body read once, sent whole on the new connection');
});

t.test('SMTP: one final reply for all recipients', async (t) => {
  const { client } = await raw(t, async (p) => {
    await hello(p, ...CAPS);
    await oneWrite(p, 2);
    p.send('250 ok\r\n550 no a\r\n250 ok\r\n250 queued\r\n');
  });
  const res = await client({}, 'smtp').deliver(TWO, chunks(BODY), small);
  t.same(res.map((r) => [r.text, r.outcome]), [['no a', 'permfail'], ['queued', 'delivered']]);
});

t.test('a final reply that never comes: the final timeout, and the result says it may be delivered', async (t) => {
  const { client } = await raw(t, async (p) => {
    await hello(p, ...CAPS);
    await oneWrite(p, 2);
    p.send('250 ok\r\n250 ok\r\n250 ok\r\n250 a saved\r\n');  // b's never
  });
  const res = await client({ final: 300 }).deliver(TWO, chunks(BODY), small);
  t.same(res.map((r) => r.outcome), ['delivered', 'tempfail']);
  t.match(res[1]?.text, /may have been delivered/);
});
