// The embedded Maildir target, driven by a raw LMTP socket so the exact bytes on the wire are known.
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import t from 'tap';
import type { Test } from 'tap';
import { ensureMaildir, uniqueName, writeMaildirMessage, writeTmp } from '../../local/maildir.ts';
import { mailboxName, startMaildirTarget } from '../../local/maildir-target.ts';
import type { MaildirTarget, MaildirTargetOptions } from '../../local/maildir-target.ts';
import { deliver, RawLmtp, session, stored, transaction, wire } from '../helpers/raw-lmtp.ts';

const CRLF = Buffer.from('\r\n');

/** The message as it must be stored: CRLF lines, 8-bit bytes, lines that start with '.'. */
function messageLines(extra: Buffer[] = []): Buffer[] {
  return [
    Buffer.from('From: Sender <sender@example.net>'),
    Buffer.from('To: alice@example.test'),
    Buffer.from('Subject: embedded target'),
    Buffer.alloc(0),
    Buffer.concat([Buffer.from('caf'), Buffer.from([0xc3, 0xa9]), Buffer.from(' raw: '), Buffer.from([0x00, 0x80, 0xfe, 0xff])]),
    Buffer.from('.one leading dot'),
    Buffer.from('..two leading dots'),
    Buffer.from('.'),
    ...extra,
    Buffer.from('last line'),
  ];
}


async function tempRoot(t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'mailbridge-maildir-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function withTarget(
  t: Test,
  opts: Omit<MaildirTargetOptions, 'root'> = {},
): Promise<{ target: MaildirTarget; root: string; events: Record<string, unknown>[] }> {
  const base = await tempRoot(t);
  const events: Record<string, unknown>[] = [];
  const target = await startMaildirTarget({ root: path.join(base, 'maildir'), log: (e) => events.push(e), ...opts });
  t.teardown(() => target.close());
  return { target, root: target.root, events };
}

const list = (dir: string) => readdir(dir).catch(() => [] as string[]);

async function newFiles(maildir: string): Promise<Buffer[]> {
  const names = (await list(path.join(maildir, 'new'))).sort();
  return Promise.all(names.map((n) => readFile(path.join(maildir, 'new', n))));
}

/** Every file below root that sits in a tmp/ directory. */
async function tmpLeftovers(root: string): Promise<string[]> {
  const left: string[] = [];
  for (const box of await list(root)) {
    for (const f of await list(path.join(root, box, 'tmp'))) left.push(path.join(box, 'tmp', f));
  }
  return left;
}

t.test('mailboxName refuses names that are not one safe path component', async (t) => {
  t.equal(mailboxName('Alice@Example.Test'), 'alice@example.test', 'lowercased');
  t.equal(mailboxName('postmaster'), 'postmaster');
  for (const bad of ['', '.', '..', '../x@example.test', '.hidden@example.test', 'a/b@example.test',
    'a\\b@example.test', 'a\0b@example.test', 'a\nb@example.test', 'a\x7fb@example.test', `${'a'.repeat(250)}@example.test`]) {
    t.equal(mailboxName(bad), null, `refused: ${JSON.stringify(bad)}`);
  }
});

t.test('two recipients: two files, byte-identical to the unstuffed DATA, tmp/ empty', async (t) => {
  const { target, root, events } = await withTarget(t);
  t.match(target.url, /^lmtp:\/\/127\.0\.0\.1:\d+$/);
  t.equal(target.url, `lmtp://127.0.0.1:${target.port}`);
  const lines = messageLines();

  const { rcpt, data } = await deliver(target.port, ['alice@example.test', 'Bob@Example.Test'], wire(lines));
  t.same(rcpt.map((r) => r.code), [250, 250]);
  t.same(data.map((r) => r.code), [250, 250], 'one 250 per recipient after DATA');
  t.match(data[0]?.lines[0] ?? '', /^250 2\.6\.0 <alice@example\.test> \S+ Saved$/);
  t.match(data[1]?.lines[0] ?? '', /^250 2\.6\.0 <Bob@Example\.Test> \S+ Saved$/);

  t.same((await list(root)).sort(), ['alice@example.test', 'bob@example.test'], 'one Maildir per lowercased recipient');
  for (const box of ['alice@example.test', 'bob@example.test']) {
    const files = await newFiles(path.join(root, box));
    t.equal(files.length, 1, `${box} has one message`);
    t.ok(files[0]?.equals(stored(lines)), `${box}: stored bytes equal the sent message exactly`);
    t.same(await list(path.join(root, box, 'cur')), [], `${box}: cur/ exists and is empty`);
  }
  t.same(await tmpLeftovers(root), [], 'no tmp/ leftovers');
  t.same(events.filter((e) => e.event === 'stored').map((e) => e.rcpt), ['alice@example.test', 'Bob@Example.Test']);
  t.notOk(JSON.stringify(events).includes('leading dot'), 'the log never carries message bytes');
});

t.test('several messages on one connection get distinct names', async (t) => {
  const { target, root } = await withTarget(t);
  const client = await session(target.port);
  const first = stored(messageLines([Buffer.from('first')]));
  const second = stored(messageLines([Buffer.from('second')]));
  await transaction(client, ['alice@example.test'], wire(messageLines([Buffer.from('first')])));
  await transaction(client, ['alice@example.test'], wire(messageLines([Buffer.from('second')])));
  await client.quit();
  const files = await newFiles(path.join(root, 'alice@example.test'));
  t.equal(files.length, 2);
  t.ok(files.some((f) => f.equals(first)) && files.some((f) => f.equals(second)), 'both messages stored intact');
});

t.test('an unsafe recipient is refused at RCPT, the others are delivered', async (t) => {
  const { target, root, events } = await withTarget(t);
  const { rcpt, data } = await deliver(
    target.port,
    ['a/b@example.test', 'alice@example.test', '../../etc@example.test'],
    wire(messageLines()),
  );
  t.equal(rcpt[0]?.code, 553, "a '/' in the address: 553");
  t.match(rcpt[0]?.lines[0] ?? '', /^553 5\.1\.3 /, 'enhanced code 5.1.3 (bad destination mailbox address syntax)');
  t.equal(rcpt[1]?.code, 250);
  t.equal(rcpt[2]?.code, 501, "a '..' address is already refused by smtp-server's parser");
  t.same(data.map((r) => r.code), [250]);
  t.same(await list(root), ['alice@example.test'], 'nothing else was created under root');
  t.notOk(existsSync(path.join(root, 'a')), 'no directory from the slash address');
  t.ok(events.some((e) => e.event === 'rcpt_refused' && e.rcpt === 'a/b@example.test'));
});

t.test('size limit: 552 5.3.4 for every recipient, nothing stored, connection still usable', async (t) => {
  const { target, root, events } = await withTarget(t, { maxBytes: 1024 });
  const client = await session(target.port);
  const big = messageLines([Buffer.alloc(4096, 'x')]);
  const tooBig = await transaction(client, ['alice@example.test', 'bob@example.test'], wire(big));
  t.same(tooBig.rcpt.map((r) => r.code), [250, 250]);
  t.same(tooBig.data.map((r) => r.code), [552, 552]);
  for (const reply of tooBig.data) t.match(reply.lines[0] ?? '', /^552 5\.3\.4 /);
  t.same(await newFiles(path.join(root, 'alice@example.test')), [], 'nothing in new/');
  t.same(await tmpLeftovers(root), [], 'the partial file was removed from tmp/');
  t.ok(events.some((e) => e.event === 'too_big'));

  const small = await transaction(client, ['alice@example.test'], wire(messageLines()));
  t.same(small.data.map((r) => r.code), [250], 'a message under the limit on the same connection is stored');
  await client.quit();
  t.equal((await newFiles(path.join(root, 'alice@example.test'))).length, 1);
});

t.test("one recipient's storage failure does not fail the others", async (t) => {
  const { target, root, events } = await withTarget(t);
  // A plain file where carol's Maildir should be: her Maildir cannot be made (even as root).
  await writeFile(path.join(root, 'carol@example.test'), 'not a directory');
  const lines = messageLines();
  const { rcpt, data } = await deliver(target.port, ['carol@example.test', 'alice@example.test', 'bob@example.test'], wire(lines));
  t.same(rcpt.map((r) => r.code), [250, 250, 250]);
  t.same(data.map((r) => r.code), [451, 250, 250], 'first recipient tempfails, the rest are stored');
  t.match(data[0]?.lines[0] ?? '', /^451 4\.3\.0 <carol@example\.test> /);
  for (const box of ['alice@example.test', 'bob@example.test']) {
    const files = await newFiles(path.join(root, box));
    t.ok(files.length === 1 && files[0]?.equals(stored(lines)), `${box} got the exact message`);
  }
  t.same(await tmpLeftovers(root), []);
  t.ok(events.some((e) => e.event === 'maildir_failed' && e.rcpt === 'carol@example.test'));
});

t.test('a client that disconnects in the middle of DATA leaves nothing behind', async (t) => {
  const { target, root, events } = await withTarget(t);
  const client = await session(target.port);
  t.equal((await client.command('MAIL FROM:<sender@example.net>')).code, 250);
  t.equal((await client.command('RCPT TO:<alice@example.test>')).code, 250);
  t.equal((await client.command('DATA')).code, 354);
  client.write(wire(messageLines()).subarray(0, 60)); // no terminating dot
  await new Promise((resolve) => setTimeout(resolve, 50));
  client.destroy();
  for (let i = 0; i < 100 && !events.some((e) => e.event === 'stage_failed'); i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  t.ok(events.some((e) => e.event === 'stage_failed'), 'the half-received message was given up');
  t.same(await newFiles(path.join(root, 'alice@example.test')), [], 'nothing in new/');
  t.same(await tmpLeftovers(root), [], 'the partial file was removed from tmp/');
});

t.test('close() stops accepting connections', async (t) => {
  const base = await tempRoot(t);
  const target = await startMaildirTarget({ root: path.join(base, 'm') });
  await target.close();
  await target.close();
  await t.rejects(RawLmtp.connect(target.port));
});

t.test('maildir.ts', async (t) => {
  t.test('uniqueName follows time.M<usec>P<pid>Q<n>.<host>', async (t) => {
    const a = uniqueName();
    const b = uniqueName();
    t.match(a, new RegExp(`^\\d+\\.M\\d{1,6}P${process.pid}Q\\d+\\.[^/:]+$`));
    t.not(a, b);
  });

  t.test('writeMaildirMessage streams a Readable into new/ and leaves tmp/ empty', async (t) => {
    const dir = path.join(await tempRoot(t), 'box');
    const parts = [Buffer.from('Subject: x\r\n\r\n'), Buffer.from([0xff, 0x00, 0x80]), Buffer.from('\r\n')];
    const result = await writeMaildirMessage(dir, Readable.from(parts));
    t.equal(result.bytes, Buffer.concat(parts).length);
    t.equal(path.dirname(result.path), path.join(dir, 'new'));
    t.ok((await readFile(result.path)).equals(Buffer.concat(parts)));
    t.same(await list(path.join(dir, 'tmp')), []);
    t.same((await list(dir)).sort(), ['cur', 'new', 'tmp']);
  });

  t.test('writeTmp with discardIf drains the source and removes the file', async (t) => {
    const dir = path.join(await tempRoot(t), 'box');
    await ensureMaildir(dir);
    const source = new PassThrough();
    let seen = 0;
    const result = writeTmp(dir, source, { discardIf: () => seen > 1 });
    for (let i = 0; i < 5; i++) {
      seen++;
      source.write(Buffer.from(`chunk ${i}\r\n`));
    }
    source.end();
    t.equal(await result, null);
    t.ok(source.readableEnded, 'the source was read to its end');
    t.same(await list(path.join(dir, 'tmp')), []);
  });

  t.test('writeTmp into a missing Maildir fails but still drains the source', async (t) => {
    const dir = path.join(await tempRoot(t), 'missing');
    const source = Readable.from([Buffer.from('a'), Buffer.from('b')]);
    await t.rejects(writeTmp(dir, source), { code: 'ENOENT' });
    t.ok(source.readableEnded);
  });

  t.test('writeTmp refuses a string stream', async (t) => {
    const dir = path.join(await tempRoot(t), 'box');
    await ensureMaildir(dir);
    await t.rejects(writeTmp(dir, Readable.from(['text'])), TypeError);
    t.same(await list(path.join(dir, 'tmp')), [], 'no file left behind');
  });
});
