// The client against a raw net server that sends exact bytes: split replies, BDAT framing,
// drops, silence, early and unexpected replies.
import t from 'tap';
import { MAY_BE_DELIVERED, type RecipientReply } from '../../lmtp-proxy/client.ts';
import { brief, chunks, hello, raw, type Peer } from '../helpers/lmtp-script.ts';

// MAIL, n RCPTs and DATA, one at a time (no PIPELINING), all accepted unless `rcpt` says otherwise.
async function envelope(p: Peer, n: number, rcpt: (i: number) => string = () => '250 ok\r\n'): Promise<void> {
  await p.line();
  p.send('250 ok\r\n');
  for (let i = 0; i < n; i++) {
    await p.line();
    p.send(rcpt(i));
  }
}

/** DATA answered 354, then the whole body up to its final dot. */
async function dataToTheDot(p: Peer): Promise<void> {
  await p.line();
  p.send('354 go\r\n');
  await p.until('\r\n.\r\n');
}

const ENV = { sender: 's@example.net', recipients: ['a@example.org', 'b@example.org'] };

t.test('multiline replies split at any byte arrive whole, and LMTP replies map by position', async (t) => {
  const { peers, client } = await raw(t, async (p) => {
    await p.sendPieces('220-raw.test', ' LMTP\r\n22', '0 ready\r\n');
    await p.line();
    await p.sendPieces('250-raw.test\r\n250-ENHANCEDSTATUSCODES\r', '\n250 8BITMIME\r\n');
    await envelope(p, 2);
    await p.line();
    p.send('354 go ahead\r\n');
    await p.until('\r\n.\r\n');
    await p.sendPieces('250 2.0.0 <a> saved\r\n452-4.2.2 mailbox', ' over\r\n452 4.2.2', ' quota\r\n');
  });
  const res = await client().deliver(ENV, chunks('hello\r\n'));
  t.same(brief(res), [
    ['a@example.org', 250, '2.0.0', '<a> saved', 'delivered'],
    ['b@example.org', 452, '4.2.2', 'mailbox over quota', 'tempfail'],
  ]);
  t.same(peers[0]?.lines, ['LHLO client.test', 'MAIL FROM:<s@example.net>', 'RCPT TO:<a@example.org>', 'RCPT TO:<b@example.org>', 'DATA']);
});

t.test('PIPELINING: MAIL, every RCPT and DATA go out in one write', async (t) => {
  const { peers, client } = await raw(t, async (p) => {
    await hello(p, 'PIPELINING');
    await p.until('DATA\r\n');
    p.send('250 ok\r\n550 no such user\r\n250 ok\r\n354 go\r\n');
    await p.until('\r\n.\r\n');
    p.send('250 done\r\n');
  });
  const res = await client().deliver({ sender: '', recipients: ['x@example.org', 'a@example.org'] }, chunks('m\r\n'));
  t.same(brief(res), [['x@example.org', 550, null, 'no such user', 'permfail'], ['a@example.org', 250, null, 'done', 'delivered']]);
  t.equal(peers[0]?.chunks[1]?.toString(), 'MAIL FROM:<>\r\nRCPT TO:<x@example.org>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n');
});

t.test('CHUNKING: exact BDAT framing, no dot-stuffing, nothing added, chunks coalesced to 1 MiB', async (t) => {
  const frames: { header: string; data: Buffer }[] = [];
  const { peers, client } = await raw(t, async (p) => {
    await hello(p, 'PIPELINING', 'CHUNKING');
    for (;;) {
      const l = await p.line();
      if (l === 'RSET' || l.startsWith('MAIL') || l.startsWith('RCPT')) { p.send('250 ok\r\n'); continue; }
      const m = /^BDAT (\d+)( LAST)?$/.exec(l);
      if (!m) { p.send('500 what\r\n'); continue; }
      frames.push({ header: l, data: await p.bytes(Number(m[1])) });
      p.send(m[2] ? '250 a saved\r\n250 b saved\r\n' : '250 chunk ok\r\n');
    }
  });
  const c = client();
  const small = await c.deliver(ENV, chunks('a\r\n', '.b\r\n', '.'));
  t.same(small.map((r) => r.outcome), ['delivered', 'delivered']);
  t.same(frames.map((f) => [f.header, f.data.toString('latin1')]), [['BDAT 8 LAST', 'a\r\n.b\r\n.']]);
  frames.length = 0;

  const part = (fill: string): Buffer => Buffer.alloc(600 * 1024, fill);
  const big = [part('.\r\n'), part('x'), part('\n.')];
  async function* bigBody(): AsyncGenerator<Uint8Array> { yield* big; }
  const res = await c.deliver(ENV, bigBody());
  t.same(brief(res), [['a@example.org', 250, null, 'a saved', 'delivered'], ['b@example.org', 250, null, 'b saved', 'delivered']]);
  t.same(frames.map((f) => f.header), ['BDAT 1228800', 'BDAT 614400 LAST']);
  t.ok(Buffer.concat(frames.map((f) => f.data)).equals(Buffer.concat(big)), 'the body, byte for byte');
  t.equal(peers.length, 1, 'second message on the same connection');
  t.notOk(peers[0]?.lines.includes('RSET'), 'no RSET after a transaction that ended with its final replies');
});

t.test('CHUNKING: bdatChunkBytes bounds the body gathered into one BDAT (what the client holds)', async (t) => {
  const frames: { header: string; data: Buffer }[] = [];
  const { client } = await raw(t, async (p) => {
    await hello(p, 'PIPELINING', 'CHUNKING');
    for (;;) {
      const l = await p.line();
      if (l.startsWith('MAIL') || l.startsWith('RCPT')) { p.send('250 ok\r\n'); continue; }
      const m = /^BDAT (\d+)( LAST)?$/.exec(l);
      if (!m) { p.send('500 what\r\n'); continue; }
      frames.push({ header: l, data: await p.bytes(Number(m[1])) });
      p.send(m[2] ? '250 a saved\r\n250 b saved\r\n' : '250 chunk ok\r\n');
    }
  });
  // As a fetched body arrives: socket reads of 64 KiB, then a short tail.
  const pieces = [...Array.from({ length: 10 }, (_, i) => Buffer.alloc(64 * 1024, 65 + i)), Buffer.from('tail\r\n')];
  async function* body(): AsyncGenerator<Uint8Array> { yield* pieces; }
  const res = await client({}, 'lmtp', [], { bdatChunkBytes: 256 * 1024 }).deliver(ENV, body());
  t.same(res.map((r) => r.outcome), ['delivered', 'delivered']);
  // The default (1 MiB) would send all of it as one BDAT 655366 LAST, held whole first.
  t.same(frames.map((f) => f.header), ['BDAT 262144', 'BDAT 262144', 'BDAT 131078 LAST']);
  t.ok(Buffer.concat(frames.map((f) => f.data)).equals(Buffer.concat(pieces)), 'the body, byte for byte');
  t.throws(() => client({}, 'lmtp', [], { bdatChunkBytes: 0 }), TypeError, 'a chunk of no bytes is refused');
});

t.test('connection dropped after the final dot: every accepted recipient tempfails', async (t) => {
  const { client } = await raw(t, async (p) => {
    await hello(p);
    await envelope(p, 2, (i) => (i === 1 ? '550 no\r\n' : '250 ok\r\n'));
    await dataToTheDot(p);
    p.socket.destroy();
  });
  const res = await client().deliver(ENV, chunks('x\r\n'));
  t.same(brief(res), [
    ['a@example.org', 0, null, 'ECONNECTION: connection closed by the server while waiting for the reply to end of data (the message may have been delivered)', 'tempfail'],
    ['b@example.org', 550, null, 'no', 'permfail'],
  ]);
});

t.test('LMTP: a drop after the first of two final replies leaves the second tempfail', async (t) => {
  const { client } = await raw(t, async (p) => {
    await hello(p);
    await envelope(p, 2);
    await dataToTheDot(p);
    p.send('250 first ok\r\n');
    await new Promise((r) => setTimeout(r, 20));
    p.socket.destroy();
  });
  const res = await client().deliver(ENV, chunks('x\r\n'));
  t.same(res.map((r) => [r.code, r.outcome]), [[250, 'delivered'], [0, 'tempfail']]);
  t.match(res[1]?.text, /^ECONNECTION: /);
});

t.test('slow server: no reply to the final dot within the final timeout', async (t) => {
  const { client } = await raw(t, async (p) => {
    await hello(p);
    await envelope(p, 2);
    await p.line();
    p.send('354 go\r\n');
    await p.until('\r\n.\r\n');  // and then say nothing
  });
  const started = Date.now();
  const res = await client({ final: 200 }).deliver(ENV, chunks('x\r\n'));
  const text = 'ETIMEDOUT: no reply to end of data (the message may have been delivered) within 200 ms';
  t.same(brief(res), [['a@example.org', 0, null, text, 'tempfail'], ['b@example.org', 0, null, text, 'tempfail']]);
  t.ok(Date.now() - started < 1000, 'did not wait longer than needed');
});

t.test('greeting never sent: ETIMEDOUT after the greeting timeout', async (t) => {
  const { client } = await raw(t, async () => undefined);
  const res = await client({ greeting: 200 }).deliver(ENV, chunks('x'));
  t.same(res.map((r) => r.text), ['ETIMEDOUT: no reply to the greeting within 200 ms', 'ETIMEDOUT: no reply to the greeting within 200 ms']);
});

t.test('greeting 421 or 554: every recipient tempfails with that reply (a refused session is not about the message)', async (t) => {
  for (const [greeting, outcome] of [['421 busy, try later', 'tempfail'], ['554 go away', 'tempfail']]) {
    const { peers, client } = await raw(t, async (p) => p.send(`${greeting}\r\n`));
    const res = await client().deliver(ENV, chunks('x'));
    const [code, ...text] = (greeting ?? '').split(' ');
    t.same(brief(res), ENV.recipients.map((r) => [r, Number(code), null, text.join(' '), outcome]));
    t.same(peers[0]?.lines, [], 'nothing sent after the greeting');
  }
});

t.test('a reply when none is expected is EPROTOCOL: the socket closes, the rest tempfail', async (t) => {
  let rest: Buffer | null = null;
  const { client } = await raw(t, async (p) => {
    await hello(p);
    await p.line();
    p.send('250 ok\r\n250 surprise\r\n');
    rest = await p.rest();
  });
  const res = await client().deliver(ENV, chunks('x'));
  t.same(res.map((r) => [r.code, r.text, r.outcome]), [
    [0, 'EPROTOCOL: unexpected reply: 250 surprise', 'tempfail'],
    [0, 'EPROTOCOL: unexpected reply: 250 surprise', 'tempfail'],
  ]);
  await new Promise((r) => setTimeout(r, 20));
  t.equal(String(rest), '', 'closed without sending anything more');
});

t.test('a reply line over 4096 bytes is EPROTOCOL', async (t) => {
  const { client } = await raw(t, async (p) => {
    await hello(p);
    await p.line();
    p.send('250 ' + 'x'.repeat(5000));
  });
  const res = await client().deliver(ENV, chunks('x'));
  t.same(res.map((r) => r.text), ['EPROTOCOL: reply line longer than 4096 bytes', 'EPROTOCOL: reply line longer than 4096 bytes']);
});

t.test('no recipient accepted: RSET instead of DATA, and the body is never read', async (t) => {
  const { peers, client } = await raw(t, async (p) => {
    await hello(p);
    await envelope(p, 2, () => '550 no\r\n');
    await p.line();
    p.send('250 reset\r\n');
  });
  let read = false;
  async function* body(): AsyncGenerator<Uint8Array> { read = true; yield Buffer.from('x'); }
  const res = await client().deliver(ENV, body());
  t.same(res.map((r) => r.outcome), ['permfail', 'permfail']);
  t.equal(read, false);
  t.same(peers[0]?.lines.slice(-1), ['RSET']);
});

t.test('a body that fails mid-way: ESTREAM, and the final dot is never sent', async (t) => {
  let received: Buffer | null = null;
  const { client } = await raw(t, async (p) => {
    await hello(p);
    await envelope(p, 2);
    await p.line();
    p.send('354 go\r\n');
    received = await p.rest();
  });
  async function* body(): AsyncGenerator<Uint8Array> {
    yield Buffer.from('first line\r\n');
    yield Buffer.from('second line\r\n');
    yield Buffer.from('third line\r\n');
    throw new Error('disk on fire');
  }
  const res = await client().deliver(ENV, body());
  t.same(res.map((r) => [r.text, r.outcome]), [
    ['ESTREAM: reading the message body failed: disk on fire', 'tempfail'],
    ['ESTREAM: reading the message body failed: disk on fire', 'tempfail'],
  ]);
  await new Promise((r) => setTimeout(r, 20));
  const got = String(received);
  t.match(got, /^first line\r\n/, 'the body had started');
  t.notMatch(got, /\n\.\r\n/, 'connection dropped without the terminator');
});

t.test('a server that stops reading: memory stays bounded and dataBlock times out', async (t) => {
  const { client } = await raw(t, async (p) => {
    await hello(p);
    await envelope(p, 1);
    await p.line();
    p.send('354 go\r\n');
    p.socket.pause();
  });
  let yielded = 0;
  async function* endless(): AsyncGenerator<Uint8Array> {
    for (;;) { yielded++; yield Buffer.alloc(64 * 1024, 'a'); }
  }
  const res = await client({ dataBlock: 200 }).deliver({ sender: '', recipients: ['a@example.org'] }, endless());
  t.same(res.map((r) => [r.text, r.outcome]), [['ETIMEDOUT: could not send the message body within 200 ms', 'tempfail']]);
  t.ok(yielded < 512, `stopped reading the body at ${yielded} chunks of 64 KiB`);
});

t.test('RSET refused on a kept connection: reconnect and deliver', async (t) => {
  const { peers, client } = await raw(t, async (p, n) => {
    await hello(p);
    if (n === 1) {
      // DATA refused: the transaction is still open, so the next one starts with RSET.
      await envelope(p, 1);
      await p.line();
      p.send('451 not now\r\n');
      await p.line();
      p.send('502 no RSET here\r\n');
      return;
    }
    await envelope(p, 1);
    await dataToTheDot(p);
    p.send('250 two\r\n');
  });
  const c = client();
  const one = await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('1\r\n'));
  const two = await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('2\r\n'));
  t.same([one[0]?.text, two[0]?.text], ['not now', 'two']);
  t.equal(peers.length, 2);
  t.same(peers[0]?.lines.slice(-1), ['RSET']);
});

// A kept connection is reused without RSET after a clean transaction. If it turns out to be
// gone before MAIL is answered, nothing of the message was sent: once more on a new connection.
async function oneMessage(p: Peer, reply: string): Promise<void> {
  await envelope(p, 1);
  await dataToTheDot(p);
  p.send(reply);
}

t.test('kept connection closed by the server while idle: the next message goes out once, on a new connection', async (t) => {
  const { peers, client } = await raw(t, async (p, n) => {
    await hello(p);
    await oneMessage(p, `250 saved ${n}\r\n`);
    if (n === 1) p.socket.end();  // an idle timeout on the server's side, without a 421
  });
  const c = client();
  t.equal((await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('1\r\n')))[0]?.text, 'saved 1');
  await new Promise((r) => setTimeout(r, 50));
  t.equal((await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('2\r\n')))[0]?.text, 'saved 2');
  t.equal(peers.length, 2);
  t.same(peers[1]?.lines.filter((l) => l.startsWith('MAIL')).length, 1, 'one transaction on the new connection');
});

t.test('kept connection that drops after reading MAIL, or answers it 421: retried once on a new connection', async (t) => {
  for (const caps of [[], ['PIPELINING']]) {
    for (const how of ['drop', '421'] as const) {
      const { peers, client } = await raw(t, async (p, n) => {
        await hello(p, ...caps);
        await oneMessage(p, `250 saved ${n}\r\n`);
        if (n > 1) return;
        await p.line();  // the next MAIL, on the kept connection: never answered as a MAIL
        if (how === '421') p.send('421 4.4.2 idle too long\r\n');
        p.socket.end();
      });
      const c = client();
      const what = `${how}${caps.length ? ', pipelined' : ''}`;
      t.equal((await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('1\r\n')))[0]?.text, 'saved 1', what);
      const two = await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('2\r\n'));
      t.same(two.map((r) => [r.text, r.outcome]), [['saved 2', 'delivered']], `${what}: delivered on the new connection`);
      t.equal(peers.length, 2, `${what}: one new connection, no more`);
      t.equal(peers[0]?.lines.filter((l) => l === 'DATA').length, 1, `${what}: no second DATA on the old connection`);
      t.equal(peers[1]?.lines.filter((l) => l.startsWith('MAIL')).length, 1, `${what}: one transaction on the new one`);
    }
  }
});

t.test('kept connection that drops after the body: not retried, the result says it may be delivered', async (t) => {
  const { peers, client } = await raw(t, async (p, n) => {
    await hello(p);
    await oneMessage(p, `250 saved ${n}\r\n`);
    if (n > 1) return;
    await envelope(p, 1);
    await dataToTheDot(p);
    p.socket.destroy();
  });
  const c = client();
  await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('1\r\n'));
  const two = await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('2\r\n'));
  t.equal(two[0]?.outcome, 'tempfail');
  t.match(two[0]?.text, MAY_BE_DELIVERED);
  await new Promise((r) => setTimeout(r, 50));
  t.equal(peers.length, 1, 'no second attempt of a message whose body was sent');
});

t.test('a kept connection idle longer than probeAfterMs is probed with RSET first', async (t) => {
  const { peers, client } = await raw(t, async (p) => {
    await hello(p);
    await oneMessage(p, '250 saved 1\r\n');
    t.equal(await p.line(), 'RSET');
    p.send('250 ok\r\n');
    await oneMessage(p, '250 saved 2\r\n');
  });
  const c = client({}, 'lmtp', [], { probeAfterMs: 30 });
  await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('1\r\n'));
  await new Promise((r) => setTimeout(r, 60));
  t.equal((await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('2\r\n')))[0]?.text, 'saved 2');
  t.same(peers[0]?.lines.filter((l) => !l.startsWith('RCPT')), ['LHLO client.test', 'MAIL FROM:<>', 'DATA', 'RSET', 'MAIL FROM:<>', 'DATA']);
});

// A well-behaved server for dialogue tests: 250 to MAIL, RCPT and RSET, 354 to DATA, then one
// final reply per RCPT (LMTP). `own` answers a line itself instead (null: the default answer).
async function serve(p: Peer, own: (line: string) => string | null = () => null): Promise<void> {
  let rcpts = 0;
  for (;;) {
    const l = await p.line();
    const mine = own(l);
    if (mine !== null) { p.send(mine); continue; }
    if (l.startsWith('MAIL')) rcpts = 0;
    if (l.startsWith('RCPT')) rcpts++;
    if (l !== 'DATA') { p.send('250 ok\r\n'); continue; }
    p.send('354 go\r\n');
    await p.until('\r\n.\r\n');
    p.send('250 saved\r\n'.repeat(rcpts));
  }
}

t.test('consecutive messages on a kept connection: no RSET between them; with PIPELINING the next envelope is one write', async (t) => {
  for (const caps of [[], ['PIPELINING']]) {
    const { peers, client } = await raw(t, async (p) => { await hello(p, ...caps); await serve(p); });
    const c = client();
    const what = caps.length ? 'pipelined' : 'step by step';
    const res = [
      await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('1\r\n')),
      await c.deliver({ sender: 's@example.net', recipients: ['b@example.org', 'c@example.org'] }, chunks('2\r\n')),
    ];
    await new Promise((r) => setTimeout(r, 30));  // idle, but far below probeAfterMs
    res.push(await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('3\r\n')));
    t.same(res.flat().map((r) => r.outcome), ['delivered', 'delivered', 'delivered', 'delivered'], what);
    t.equal(peers.length, 1, `${what}: one connection`);
    t.same(peers[0]?.lines, [
      'LHLO client.test',
      'MAIL FROM:<>', 'RCPT TO:<a@example.org>', 'DATA',
      'MAIL FROM:<s@example.net>', 'RCPT TO:<b@example.org>', 'RCPT TO:<c@example.org>', 'DATA',
      'MAIL FROM:<>', 'RCPT TO:<a@example.org>', 'DATA',
    ], `${what}: the server sees no RSET`);
    if (caps.length) {
      t.ok(peers[0]?.chunks.some((b) => b.toString() === 'MAIL FROM:<s@example.net>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n'),
        'the second envelope arrives in one write, right after the first final reply');
    }
  }
});

t.test('a kept connection found gone at MAIL is retried once, not twice', async (t) => {
  const { peers, client } = await raw(t, async (p, n) => {
    await hello(p);
    if (n === 1) await oneMessage(p, '250 saved 1\r\n');
    await p.line();  // MAIL, never answered
    p.socket.end();
  });
  const c = client();
  await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('1\r\n'));
  const two = await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('2\r\n'));
  t.same(two.map((r) => [r.code, r.outcome]), [[0, 'tempfail']]);
  t.match(two[0]?.text, /^ECONNECTION: connection closed by the server while waiting for the reply to MAIL FROM/);
  t.notMatch(two[0]?.text, MAY_BE_DELIVERED, 'no body byte was sent');
  await new Promise((r) => setTimeout(r, 50));
  t.equal(peers.length, 2, 'the new connection was not given up on for a third');
});

t.test('a kept connection that drops once MAIL is answered: not retried, whatever followed', async (t) => {
  for (const caps of [[], ['PIPELINING']]) {
    const { peers, client } = await raw(t, async (p, n) => {
      await hello(p, ...caps);
      if (n > 1) return serve(p);
      await oneMessage(p, '250 saved 1\r\n');
      await p.line();
      if (caps.length) { await p.line(); await p.line(); }  // RCPT and DATA came with MAIL
      p.send('250 sender ok\r\n');
      p.socket.end();
    });
    const what = caps.length ? 'pipelined' : 'step by step';
    const c = client();
    await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('1\r\n'));
    let read = false;
    async function* body(): AsyncGenerator<Uint8Array> { read = true; yield Buffer.from('2\r\n'); }
    const two = await c.deliver({ sender: '', recipients: ['a@example.org'] }, body());
    t.same(two.map((r) => [r.code, r.outcome]), [[0, 'tempfail']], what);
    t.match(two[0]?.text, /^ECONNECTION: .*RCPT TO/, `${what}: the RCPT's reply is what was lost`);
    t.equal(read, false, `${what}: the body was never read`);
    await new Promise((r) => setTimeout(r, 50));
    t.equal(peers.length, 1, `${what}: no second attempt by the client`);
    // The next message is another matter: a new connection.
    t.same((await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('3\r\n'))).map((r) => r.outcome), ['delivered'], what);
    t.equal(peers.length, 2);
  }
});

t.test('after a transaction that did not end with its final replies: RSET, or a new connection', async (t) => {
  // DATA refused: the transaction stays open, so RSET first; after that, clean again.
  const refused = await raw(t, async (p) => {
    await hello(p, 'PIPELINING');
    let datas = 0;
    await serve(p, (l) => (l === 'DATA' && ++datas === 1 ? '451 4.3.0 not now\r\n' : null));
  });
  const c = refused.client();
  const send = (body: string): Promise<RecipientReply[]> => c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks(body));
  t.same([...await send('1\r\n'), ...await send('2\r\n'), ...await send('3\r\n')].map((r) => r.outcome), ['tempfail', 'delivered', 'delivered']);
  t.same(refused.peers[0]?.lines.filter((l) => !l.startsWith('RCPT')), ['LHLO client.test', 'MAIL FROM:<>', 'DATA', 'RSET', 'MAIL FROM:<>', 'DATA', 'MAIL FROM:<>', 'DATA']);

  // Every recipient refused: the RSET that closes the transaction is sent then, once.
  const none = await raw(t, async (p) => {
    await hello(p);
    let rcpts = 0;
    await serve(p, (l) => (l.startsWith('RCPT') && ++rcpts === 1 ? '550 5.1.1 no such user\r\n' : null));
  });
  const d = none.client();
  const one = await d.deliver({ sender: '', recipients: ['x@example.org'] }, chunks('1\r\n'));
  const two = await d.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('2\r\n'));
  t.same([...one, ...two].map((r) => r.outcome), ['permfail', 'delivered']);
  t.same(none.peers[0]?.lines, ['LHLO client.test', 'MAIL FROM:<>', 'RCPT TO:<x@example.org>', 'RSET', 'MAIL FROM:<>', 'RCPT TO:<a@example.org>', 'DATA']);

  // A body that broke off: the connection was dropped, the next message takes a new one.
  const broken = await raw(t, async (p) => { await hello(p); await serve(p); });
  const e = broken.client();
  async function* failing(): AsyncGenerator<Uint8Array> { yield Buffer.from('half\r\n'); throw new Error('gone'); }
  const first = await e.deliver({ sender: '', recipients: ['a@example.org'] }, failing());
  const second = await e.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('2\r\n'));
  t.same([...first, ...second].map((r) => r.outcome), ['tempfail', 'delivered']);
  t.equal(broken.peers.length, 2, 'a new connection after the broken-off body');
  t.same(broken.peers[1]?.lines, ['LHLO client.test', 'MAIL FROM:<>', 'RCPT TO:<a@example.org>', 'DATA']);
});

t.test('a message refused before anything is sent does not make a kept connection look less idle', async (t) => {
  const { peers, client } = await raw(t, async (p) => { await hello(p); await serve(p); });
  const c = client({}, 'lmtp', [], { probeAfterMs: 80 });
  await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('1\r\n'));
  await new Promise((r) => setTimeout(r, 50));
  // No SMTPUTF8 offered: refused here, not a byte sent.
  t.same((await c.deliver({ sender: 'jörg@example.net', recipients: ['a@example.org'] }, chunks('x\r\n'))).map((r) => r.code), [553]);
  await new Promise((r) => setTimeout(r, 50));
  await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('3\r\n'));
  t.same(peers[0]?.lines.filter((l) => !l.startsWith('RCPT')), ['LHLO client.test', 'MAIL FROM:<>', 'DATA', 'RSET', 'MAIL FROM:<>', 'DATA'],
    'idle 100 ms since its last transaction: probed');
});

t.test('421 in a transaction: tempfail with that reply, and the next deliver reconnects', async (t) => {
  const { peers, client } = await raw(t, async (p, n) => {
    await hello(p, 'ENHANCEDSTATUSCODES');
    if (n === 1) {
      await p.line();
      p.send('421 4.3.2 shutting down\r\n');
      p.socket.end();
      return;
    }
    await envelope(p, 1);
    await dataToTheDot(p);
    p.send('250 2.0.0 fine\r\n');
  });
  const c = client();
  const one = await c.deliver(ENV, chunks('1\r\n'));
  t.same(brief(one), ENV.recipients.map((r) => [r, 421, '4.3.2', 'shutting down', 'tempfail']));
  const two = await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('2\r\n'));
  t.same(brief(two), [['a@example.org', 250, '2.0.0', 'fine', 'delivered']]);
  t.equal(peers.length, 2);
});

t.test('an idle connection closed by the server is replaced without a failure', async (t) => {
  const { peers, client } = await raw(t, async (p) => {
    await hello(p);
    await envelope(p, 1);
    await dataToTheDot(p);
    p.send('250 ok\r\n');
    await new Promise((r) => setTimeout(r, 20));
    p.send('421 idle too long\r\n');
    p.socket.end();
  });
  const c = client();
  await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('1\r\n'));
  await new Promise((r) => setTimeout(r, 60));
  const two = await c.deliver({ sender: '', recipients: ['a@example.org'] }, chunks('2\r\n'));
  t.same(two.map((r) => r.outcome), ['delivered']);
  t.equal(peers.length, 2);
});

t.test('SMTP: EHLO refused with 502 falls back to HELO, then no extensions are used', async (t) => {
  const { peers, client } = await raw(t, async (p) => {
    p.send('220 old.test ESMTP\r\n');
    await p.line();
    p.send('502 EHLO? never heard of it\r\n');
    await p.line();
    p.send('250 old.test\r\n');
    await envelope(p, 2);
    await dataToTheDot(p);
    p.send('250 queued\r\n');
  });
  const res = await client({}, 'smtp').deliver(ENV, chunks('x\r\n'), { eightBit: true, size: 3 });
  t.same(brief(res), ENV.recipients.map((r) => [r, 250, null, 'queued', 'delivered']));
  t.same(peers[0]?.lines.slice(0, 3), ['EHLO client.test', 'HELO client.test', 'MAIL FROM:<s@example.net>']);
});

t.test('a recipient given twice gets one RCPT and shares its result', async (t) => {
  const { peers, client } = await raw(t, async (p) => {
    await hello(p);
    await envelope(p, 1);
    await dataToTheDot(p);
    p.send('250 once\r\n');
  });
  const res = await client().deliver({ sender: '', recipients: ['a@example.org', 'a@example.org'] }, chunks('x\r\n'));
  t.same(brief(res), [['a@example.org', 250, null, 'once', 'delivered'], ['a@example.org', 250, null, 'once', 'delivered']]);
  t.equal(peers[0]?.lines.filter((l) => l.startsWith('RCPT')).length, 1);
});

t.test('disable: an offered extension is not used (CHUNKING off: DATA with dot-stuffing)', async (t) => {
  const { peers, client } = await raw(t, async (p) => {
    await hello(p, 'PIPELINING', 'CHUNKING');
    await p.until('DATA\r\n');
    p.send('250 ok\r\n250 ok\r\n354 go\r\n');
    await p.until('\r\n.\r\n');
    p.send('250 stored\r\n');
  });
  const res = await client({}, 'lmtp', ['CHUNKING']).deliver({ sender: '', recipients: ['a@example.org'] }, chunks('.x\r\n'));
  t.same(res.map((r) => r.outcome), ['delivered']);
  t.notOk(peers[0]?.lines.some((l) => l.startsWith('BDAT')), 'no BDAT');
  t.match(Buffer.concat(peers[0]?.chunks ?? []).toString('latin1'), /DATA\r\n\.\.x\r\n\.\r\n$/, 'stuffed and terminated');
});

t.test('421 after the final dot: tempfail, and the text says the message may have been delivered', async (t) => {
  const { client } = await raw(t, async (p) => {
    await hello(p, 'ENHANCEDSTATUSCODES');
    await envelope(p, 2);
    await dataToTheDot(p);
    p.send('250 2.0.0 first saved\r\n421 4.3.2 shutting down\r\n');
    p.socket.end();
  });
  const res = await client().deliver(ENV, chunks('x\r\n'));
  t.same(brief(res), [
    ['a@example.org', 250, '2.0.0', 'first saved', 'delivered'],
    ['b@example.org', 421, '4.3.2', `${MAY_BE_DELIVERED} shutting down`, 'tempfail'],
  ]);
});

t.test('after the final dot, what is no reply is an unknown outcome: tempfail, may have been delivered', async (t) => {
  // The first recipient's 250 is read; then the server sends something the client cannot
  // take as an answer about the second. It may have stored that copy: never a refusal.
  const cases: [string, RegExp][] = [
    ['garbage line', /^EPROTOCOL: malformed reply line "this is not a reply"/],
    ['over-long line', /^EPROTOCOL: reply line longer than 4096 bytes/],
    ['mixed multi-line codes', /^EPROTOCOL: multiline reply with mixed codes/],
    ['a 3xx reply', /^EPROTOCOL: unexpected reply to end of data .* 354 more\?/],
  ];
  const after: Record<string, string> = {
    'garbage line': 'this is not a reply\r\n',
    'over-long line': `250 ${'x'.repeat(5000)}\r\n`,
    'mixed multi-line codes': '250-stored\r\n550 not stored\r\n',
    'a 3xx reply': '354 more?\r\n',
  };
  for (const [name, text] of cases) {
    const { client } = await raw(t, async (p) => {
      await hello(p);
      await envelope(p, 2);
      await dataToTheDot(p);
      p.send(`250 first stored\r\n${after[name] ?? ''}`);
    });
    const finals: string[] = [];
    const res = await client().deliver(ENV, chunks('x\r\n'), { onFinal: (r) => finals.push(r.recipient) });
    t.same(res.map((r) => [r.code, r.outcome]), [[250, 'delivered'], [0, 'tempfail']], name);
    t.match(res[1]?.text, text, `${name}: the reason`);
    t.equal(res[1]?.text.split(MAY_BE_DELIVERED).length, 2, `${name}: marked as maybe delivered, once`);
    t.same(finals, ['a@example.org'], `${name}: only the stored one is reported final`);
  }
});

t.test('onFinal: each recipient\'s final reply is reported as it arrives, before the next one', async (t) => {
  let release: () => void = () => {};
  const held = new Promise<void>((r) => { release = r; });
  const { client } = await raw(t, async (p) => {
    await hello(p);
    await envelope(p, 2);
    await dataToTheDot(p);
    p.send('250 first stored\r\n');
    await held;  // the second copy is still being written
    p.send('250 second stored\r\n');
  });
  const seen: string[] = [];
  const done = client().deliver(ENV, chunks('x\r\n'), { onFinal: (r) => seen.push(`${r.recipient} ${r.outcome}`) });
  for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.same(seen, ['a@example.org delivered'], 'the first is reported while the second is pending');
  release();
  await done;
  t.same(seen, ['a@example.org delivered', 'b@example.org delivered']);
});

t.test('no SMTPUTF8 offered: a UTF-8 address is refused with 5.6.7 and never sent', async (t) => {
  const { peers, client } = await raw(t, async (p, n) => {
    await hello(p, 'ENHANCEDSTATUSCODES');
    if (n > 1) return;
    await envelope(p, 1);
    await dataToTheDot(p);
    p.send('250 2.0.0 ok\r\n');
  });
  const c = client();
  const res = await c.deliver({ sender: 's@example.net', recipients: ['jörg@example.org', 'a@example.org'] }, chunks('x\r\n'));
  t.same(res.map((r) => [r.recipient, r.code, r.enhanced, r.outcome]), [
    ['jörg@example.org', 553, '5.6.7', 'permfail'], ['a@example.org', 250, '2.0.0', 'delivered'],
  ]);
  t.match(res[0]?.text, /needs SMTPUTF8/);
  t.notOk(peers[0]?.lines.some((l) => /[^\x00-\x7f]/.test(l)), 'no non-ASCII byte on the wire');
  const bySender = await c.deliver({ sender: 'jörg@example.net', recipients: ['a@example.org'] }, chunks('x\r\n'));
  t.same(bySender.map((r) => [r.code, r.enhanced, r.outcome]), [[553, '5.6.7', 'permfail']], 'a UTF-8 sender fails every recipient');
  t.match(bySender[0]?.text, /the sender address needs SMTPUTF8/);
  t.notOk(peers.some((p) => p.lines.some((l) => l.startsWith('MAIL FROM:<jörg'))), 'never rewritten, never sent');
});
