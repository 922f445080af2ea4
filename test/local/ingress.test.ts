// The local SMTP ingress: small messages are held in memory, large ones spooled to a file;
// either way the handoff gets the exact bytes and no spool file outlives the reply.
import t, { type Test } from 'tap';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MEMORY_MAX_BYTES, startIngress, type HandoffResult, type IngressOptions, type Received } from '../../local/ingress.ts';
import { postToWorker, workerHandoff } from '../../local/handoff.ts';
import { STAND_IN_BLOCK, sendSmtp, shiftJisMessage, splitBlock } from '../helpers/mail.ts';

interface Seen { recipient: string; kind: Received['kind']; bytes: Buffer; spoolFiles: string[] }

/** An ingress whose handoff records what it was given and what the spool dir held meanwhile. */
async function ingress(t: Test, opts: Partial<IngressOptions> = {}) {
  const spoolDir = await mkdtemp(join(tmpdir(), 'mailbridge-ingress-'));
  const seen: Seen[] = [];
  const ing = await startIngress({
    port: 0, spoolDir, maxBytes: 4 * 1024 * 1024,
    handoff: {
      async send(_sender, recipient, m): Promise<HandoffResult> {
        const bytes = m.kind === 'memory' ? Buffer.concat(m.chunks) : await readFile(m.path);
        seen.push({ recipient, kind: m.kind, bytes, spoolFiles: await readdir(spoolDir).catch(() => ['(no spool dir)']) });
        return { ok: true, id: seen.length.toString(16).padStart(32, '0') };
      },
    },
    ...opts,
  });
  t.teardown(async () => {
    await ing.close();
    await rm(spoolDir, { recursive: true, force: true });
  });
  return { port: ing.port, spoolDir, seen };
}

/** `n` bytes of every non-CR/LF value in CRLF lines (8-bit, dots at line starts), headers first. */
function eightBit(n: number): Buffer {
  const head = Buffer.from('Subject: 8-bit\r\nContent-Transfer-Encoding: 8bit\r\n\r\n', 'latin1');
  const body = Buffer.alloc(n - head.byteLength);
  for (let i = 0; i < body.byteLength; i++) {
    const col = i % 80;
    body[i] = col === 78 ? 0x0d : col === 79 ? 0x0a : col === 0 && i % 400 === 0 ? 0x2e : [0x00, 0x80, 0xff, 0x7f, 0x2e, 0x41][i % 6] ?? 0x41;
  }
  body[body.byteLength - 2] = 0x0d;
  body[body.byteLength - 1] = 0x0a;
  return Buffer.concat([head, body]);
}

t.test('a small message is handed off from memory, byte-exact; nothing is spooled', async (t) => {
  const { port, spoolDir, seen } = await ingress(t);
  const raw = Buffer.concat([shiftJisMessage('mem-1'), eightBit(4096)]);
  const res = await sendSmtp(port, 'sender@example.net', ['alice@example.test', 'bob@example.test'], raw);
  t.equal(res[0]?.code, 250, res[0]?.text ?? 'no reply');
  t.same(seen.map((s) => [s.recipient, s.kind]), [['alice@example.test', 'memory'], ['bob@example.test', 'memory']], 'both copies from memory');
  for (const s of seen) {
    t.ok(s.bytes.equals(raw), `${s.recipient}: byte-exact (8-bit, dot lines)`);
    t.same(s.spoolFiles, [], 'no spool file during the handoff');
  }
  t.same(await readdir(spoolDir), [], 'none after the reply');
});

t.test(`a message over the bound (${MEMORY_MAX_BYTES} bytes by default) is spooled, handed off byte-exact and removed`, async (t) => {
  const { port, spoolDir, seen } = await ingress(t);
  const raw = eightBit(MEMORY_MAX_BYTES + 1);
  const res = await sendSmtp(port, 'sender@example.net', ['alice@example.test', 'bob@example.test'], raw);
  t.equal(res[0]?.code, 250, res[0]?.text ?? 'no reply');
  t.same(seen.map((s) => s.kind), ['file', 'file'], 'both copies from the spool file');
  for (const s of seen) {
    t.ok(s.bytes.equals(raw), `${s.recipient}: byte-exact`);
    t.equal(s.spoolFiles.length, 1, 'one spool file during the handoff');
  }
  t.same(await readdir(spoolDir), [], 'removed after the reply');
});

t.test('the bound is exact: memoryMaxBytes bytes stay in memory, one more is spooled', async (t) => {
  const bound = 5000;
  const { port, spoolDir, seen } = await ingress(t, { memoryMaxBytes: bound });
  for (const n of [bound, bound + 1]) {
    const raw = eightBit(n);
    const res = await sendSmtp(port, 'sender@example.net', ['alice@example.test'], raw);
    t.equal(res[0]?.code, 250, res[0]?.text ?? 'no reply');
    t.ok(seen.at(-1)?.bytes.equals(raw), `${n} bytes: byte-exact`);
  }
  t.same(seen.map((s) => s.kind), ['memory', 'file']);
  t.same(await readdir(spoolDir), []);
});

t.test('over maxBytes: 552 on either path, nothing handed off, nothing left', async (t) => {
  // Over the limit while still held in memory, and after the switch to the spool file.
  for (const memoryMaxBytes of [MEMORY_MAX_BYTES, 8_000]) {
    const { port, spoolDir, seen } = await ingress(t, { maxBytes: 20_000, memoryMaxBytes });
    const res = await sendSmtp(port, 'sender@example.net', ['alice@example.test'], eightBit(40_000), { declareSize: false });
    t.equal(res[0]?.code, 552, `memoryMaxBytes ${memoryMaxBytes}: ${res[0]?.text}`);
    t.same(seen, [], 'no handoff');
    t.same(await readdir(spoolDir), [], 'no spool file');
  }
});

t.test('a spool that cannot be written: 451 for a large message; small ones need no spool', async (t) => {
  const logs: string[] = [];
  const { port, spoolDir, seen } = await ingress(t, { memoryMaxBytes: 8_000, log: (event, fields) => logs.push(`${event} ${JSON.stringify(fields)}`) });
  // The spool dir replaced by a file: creating a spool file fails with ENOTDIR.
  await rm(spoolDir, { recursive: true });
  await writeFile(spoolDir, '');
  const large = await sendSmtp(port, 'sender@example.net', ['alice@example.test'], eightBit(50_000));
  t.equal(large[0]?.code, 451);
  t.match(large[0]?.text ?? '', /4\.3\.0 Local spool error/);
  t.ok(logs.some((l) => l.startsWith('ingress.spool-failed')), 'logged');
  const small = eightBit(2_000);
  const res = await sendSmtp(port, 'sender@example.net', ['alice@example.test'], small);
  t.equal(res[0]?.code, 250, `a small message is still accepted: it is held in memory (${logs.join('; ')})`);
  t.same(seen.map((s) => s.kind), ['memory']);
  t.ok(seen[0]?.bytes.equals(small));
});

t.test('workerHandoff POSTs a fresh Cloudflare block, then exactly the bytes, from memory and from the spool file', async (t) => {
  const bodies: Buffer[] = [];
  const server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      bodies.push(body);
      const ok = req.headers.authorization === 'Bearer tok' && Number(req.headers['content-length']) === body.byteLength;
      res.writeHead(ok ? 200 : 400, { 'Content-Type': 'application/json' }).end(JSON.stringify({ id: 'f'.repeat(32) }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  const spoolDir = await mkdtemp(join(tmpdir(), 'mailbridge-ingress-'));
  const ing = await startIngress({
    port: 0, spoolDir, maxBytes: 4 * 1024 * 1024, memoryMaxBytes: 8_000,
    handoff: workerHandoff(url, 'tok', { verdicts: { spf: 'pass' } }),
  });
  t.teardown(async () => {
    await ing.close();
    await rm(spoolDir, { recursive: true, force: true });
  });
  const small = Buffer.concat([shiftJisMessage('wh-1'), eightBit(3_000)]);
  const large = eightBit(300_000);  // several socket reads, spooled
  for (const raw of [small, large]) {
    const res = await sendSmtp(ing.port, 'sender@example.net', ['alice@example.test'], raw);
    t.equal(res[0]?.code, 250, res[0]?.text ?? 'no reply');
  }
  t.equal(bodies.length, 2);
  const [a, b] = bodies.map((x) => splitBlock(x));
  for (const x of [a, b]) {
    t.match(x?.block.toString('latin1'), STAND_IN_BLOCK, 'the block Email Routing writes');
    t.match(x?.block.toString('latin1'), /for <alice@example\.test>; /, 'for the recipient of this copy');
    t.match(x?.block.toString('latin1'), /\r\nReceived-SPF: pass /, 'with the verdicts the test set');
  }
  t.ok(a?.rest.equals(small), 'from memory: the block, then the bytes exactly');
  t.ok(b?.rest.equals(large), 'from the file: the block, then the bytes exactly');
  t.not(/ id (\w{12})/.exec(a?.block.toString('latin1') ?? '')?.[1], / id (\w{12})/.exec(b?.block.toString('latin1') ?? '')?.[1], 'a fresh id each handoff');
  t.same(await readdir(spoolDir), []);
});

t.test('postToWorker: a kept-alive connection closed as a request goes out on it gets one more try on a fresh one; a fresh one that fails does not', async (t) => {
  let requests = 0;
  const drop = new Set<number>();  // the requests whose connection the server closes on arrival
  const server = createServer((req, res) => {
    const n = ++requests;
    if (drop.has(n)) { req.socket.destroy(); return; }
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ id: String(Buffer.concat(parts).byteLength).padStart(32, '0') })));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }));
  const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  const raw = eightBit(5_000);
  const message = { kind: 'memory' as const, size: raw.byteLength, chunks: [raw] };
  const first = await postToWorker(url, 'tok', 'a@example.net', 'alice@example.test', message);
  t.equal(first.ok, true, 'the first request opens a connection that is kept alive');
  drop.add(2);
  const second = await postToWorker(url, 'tok', 'a@example.net', 'alice@example.test', message);
  t.equal(second.ok, true, `sent again on a fresh connection: ${JSON.stringify(second)}`);
  t.equal(requests, 3, 'the dropped request and its one retry');
  server.closeAllConnections();  // nothing kept alive: the next request opens a fresh connection
  drop.add(4);
  const third = await postToWorker(url, 'tok', 'a@example.net', 'alice@example.test', message);
  t.same({ ok: third.ok, permanent: !third.ok && third.permanent }, { ok: false, permanent: false }, 'a fresh connection that fails is a temporary failure, not tried again');
  t.equal(requests, 4);
});
