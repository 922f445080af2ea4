// The agent checks a message's bytes as they arrive: size over all of them, SHA-256 (chunks)
// or R2's MD5 (a fetched body) over those after the header's prefix (Cloudflare's block),
// wherever the pieces are cut.
import { createHash } from 'node:crypto';
import t from 'tap';
import { InboundMessage } from '../../edge-agent/session/inbound.ts';
import type { MessageFrame } from '../../protocol/wire.ts';

const block = Buffer.from('Received: from x (127.0.0.1)\r\n        by cloudflare-email.com (unknown) id abcdefghijkl\r\n');
const body = Buffer.from('Subject: s\r\n\r\nthe sender\'s bytes\r\n');
const all = Buffer.concat([block, body]);
const header = (over: Partial<MessageFrame> = {}): MessageFrame => ({
  type: 'message', id: 'a'.repeat(32), attempt: 1, sender: '', recipients: ['a@x.test'], size: all.length,
  sha256: createHash('sha256').update(body).digest('hex'), receivedAt: 1, prefix: block.length, ...over,
});

async function transfer(h: MessageFrame, bytes: Buffer, cuts: number[]): Promise<{ failure: string | null; got: Buffer }> {
  const m = new InboundMessage(h, () => {});
  let at = 0;
  for (const c of [...cuts, bytes.length]) {
    m.push(bytes.subarray(at, c));
    at = c;
  }
  m.end();
  const parts: Uint8Array[] = [];
  try {
    for await (const p of m) parts.push(p);
  } catch {
    // reported by failure
  }
  return { failure: m.failure?.message ?? null, got: Buffer.concat(parts) };
}

t.test('the sha256 covers the bytes after the prefix, however the chunks are cut', async (t) => {
  for (const cuts of [[], [1], [block.length - 1], [block.length], [block.length + 1], [5, block.length, block.length + 3]]) {
    const r = await transfer(header(), all, cuts);
    t.equal(r.failure, null, `cut at ${cuts.join(',') || 'nowhere'}`);
    t.ok(r.got.equals(all), 'every byte handed on, the block included');
  }
});

t.test('a changed byte after the prefix, or a wrong size, fails the transfer', async (t) => {
  const bad = Buffer.from(all);
  bad[block.length + 3] = (bad[block.length + 3] ?? 0) ^ 1;
  t.match((await transfer(header(), bad, [block.length])).failure, /SHA-256 mismatch/);
  t.match((await transfer(header({ size: all.length + 1 }), all, [])).failure, /header announced/);
  t.match((await transfer(header({ prefix: undefined }), all, [])).failure, /SHA-256 mismatch/, 'without a prefix every byte is hashed');
});

t.test('a fetched body (a message in R2): R2\'s MD5 covers the bytes after the prefix, the size all of them', async (t) => {
  const fetched = (over: Partial<MessageFrame> = {}): MessageFrame => ({
    type: 'message', id: 'b'.repeat(32), attempt: 1, sender: '', recipients: ['a@x.test'], size: all.length,
    fetch: { md5: createHash('md5').update(body).digest('hex'), block: block.toString('base64') }, receivedAt: 1, prefix: block.length, ...over,
  });
  for (const cuts of [[], [block.length], [block.length + 2, block.length + 5]]) {
    const r = await transfer(fetched(), all, cuts);
    t.equal(r.failure, null, `cut at ${cuts.join(',') || 'nowhere'}`);
    t.ok(r.got.equals(all));
  }
  const bad = Buffer.from(all);
  bad[bad.length - 3] = (bad[bad.length - 3] ?? 0) ^ 1;
  t.match((await transfer(fetched(), bad, [block.length])).failure, /MD5 mismatch/);
  t.match((await transfer(fetched({ fetch: { md5: 'f'.repeat(32), block: '' } }), all, [])).failure, /MD5 mismatch/);
});

t.test('room(): a fetch waits while its bytes wait for the consumer; stop hook runs on abandon', async (t) => {
  const h: MessageFrame = {
    type: 'message', id: 'c'.repeat(32), attempt: 1, sender: '', recipients: ['a@x.test'], size: 10,
    fetch: { md5: '0'.repeat(32), block: '' }, receivedAt: 1,
  };
  const m = new InboundMessage(h, () => {});
  let stopped = 0;
  m.onStop(() => stopped++);
  m.push(new Uint8Array(6));
  let roomy = false;
  const wait = m.room(4).then(() => { roomy = true; });
  await new Promise((r) => setImmediate(r));
  t.notOk(roomy, 'six bytes unread: no room for more');
  const it = m[Symbol.asyncIterator]();
  await it.next();
  await wait;
  t.ok(roomy, 'room once the consumer read them');
  await it.return?.();
  t.ok(m.abandoned, 'the consumer left');
  t.equal(stopped, 1, 'the stop hook ran once');
  m.endUnread();
  await m.ended;
  t.equal(m.failure, null, 'a body nobody reads any more ends unchecked, not failed');
});
