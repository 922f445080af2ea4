import t from 'tap';
import { DotStuffer, dotStuffed } from '../../lmtp-proxy/dot-stream.ts';
import { prng } from '../helpers/prng.ts';


// Reference receiver, written from RFC 5321 4.5.2 and not from the encoder: a line starts
// at the beginning and after any LF (as smtp-server and Dovecot read it). A line-start dot
// must be either doubled or the terminator "." CRLF, and the terminator must end the stream.
function unstuff(wire: Buffer): Buffer {
  const out: number[] = [];
  let lineStart = true;
  for (let i = 0; i < wire.length; i++) {
    const b = wire[i];
    if (lineStart && b === 0x2e) {
      if (wire[i + 1] === 0x2e) {
        i++;
        out.push(0x2e);
        lineStart = false;
        continue;
      }
      if (wire[i + 1] === 0x0d && wire[i + 2] === 0x0a) {
        if (i + 3 !== wire.length) throw new Error(`terminator at ${i}, before the end ${wire.length}`);
        if (wire[i - 1] !== 0x0a || wire[i - 2] !== 0x0d) throw new Error('terminator not after CRLF');
        return Buffer.from(out);
      }
      throw new Error(`unstuffed dot at line start, offset ${i}`);
    }
    out.push(b ?? 0);
    lineStart = b === 0x0a;
  }
  throw new Error('no terminator');
}

const ALPHABET = [0x2e, 0x2e, 0x2e, 0x0d, 0x0d, 0x0a, 0x0a, 0x00, 0xff, 0x80, 0xc3, 0x61, 0x20];

function encode(chunks: Uint8Array[]): Buffer {
  const enc = new DotStuffer();
  return Buffer.concat([...chunks.map((c) => enc.push(c)), enc.end()]);
}

const endsWithCrlf = (b: Buffer): boolean => b.length >= 2 && b[b.length - 2] === 0x0d && b[b.length - 1] === 0x0a;

t.test('random bodies split at random boundaries round-trip through a reference un-stuffer', async (t) => {
  const SEED = 20240501;
  const rnd = prng(SEED);
  let failures = 0;
  for (let n = 0; n < 2000 && failures < 3; n++) {
    const len = Math.floor(rnd() * 200);
    const body = Buffer.alloc(len);
    for (let i = 0; i < len; i++) body[i] = ALPHABET[Math.floor(rnd() * ALPHABET.length)] ?? 0;
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < len; ) {
      const k = Math.floor(rnd() * 8);  // 0 gives empty chunks too
      chunks.push(new Uint8Array(body.subarray(i, i + k)));
      i += k;
    }
    const expected = endsWithCrlf(body) ? body : Buffer.concat([body, Buffer.from('\r\n')]);
    let got: Buffer;
    try {
      got = unstuff(encode(chunks));
    } catch (e) {
      failures++;
      t.fail(`seed ${SEED} case ${n}: ${(e as Error).message}; body ${body.toString('hex')}`);
      continue;
    }
    if (!got.equals(expected)) {
      failures++;
      t.fail(`seed ${SEED} case ${n}: body ${body.toString('hex')} came back as ${got.toString('hex')}`);
    }
  }
  t.equal(failures, 0, 'all 2000 cases round-trip');
});

t.test('a dot at line start is doubled across a chunk boundary', async (t) => {
  t.equal(encode([Buffer.from('a\r\n'), Buffer.from('.b')]).toString('latin1'), 'a\r\n..b\r\n.\r\n');
  t.equal(encode([Buffer.from('a\r'), Buffer.from('\n'), Buffer.from('.')]).toString('latin1'), 'a\r\n..\r\n.\r\n');
  t.equal(encode([Buffer.from('.')]).toString('latin1'), '..\r\n.\r\n', 'first byte of the body');
  t.equal(encode([Buffer.from('a.b\r\n.\r\n..\r\n')]).toString('latin1'), 'a.b\r\n..\r\n...\r\n.\r\n');
});

t.test('CRLF is added only when the body lacks it, even split across chunks', async (t) => {
  t.equal(encode([]).toString('latin1'), '\r\n.\r\n', 'empty body');
  t.equal(encode([Buffer.from('x\r'), Buffer.from('\n')]).toString('latin1'), 'x\r\n.\r\n');
  t.equal(encode([Buffer.from('x\r\n'), Buffer.alloc(0)]).toString('latin1'), 'x\r\n.\r\n', 'empty last chunk');
  t.equal(encode([Buffer.from('x\n')]).toString('latin1'), 'x\n\r\n.\r\n', 'bare LF end is not CRLF');
  t.equal(encode([Buffer.from('x\r')]).toString('latin1'), 'x\r\r\n.\r\n');
});

t.test('bare LF and bare CR pass through; no early terminator can be smuggled', async (t) => {
  const evil = Buffer.from('a\n.\r\nMAIL FROM:<x>\r\nb\r.\r\nc\r\n.\nd');
  const wire = encode([evil]);
  t.equal(wire.toString('latin1'), 'a\n..\r\nMAIL FROM:<x>\r\nb\r.\r\nc\r\n..\nd\r\n.\r\n');
  t.equal(wire.indexOf('\n.\r\n'), wire.length - 4, 'the only <LF>.<CR><LF> is the real end');
  t.equal(wire.indexOf('\n.\n'), -1);
});

t.test('chunks without a line-start dot are passed on without copying', async (t) => {
  const enc = new DotStuffer();
  const c = Buffer.from('no dots at line start. here\r\n');
  t.equal(enc.push(c), c);
  t.not(enc.push(Buffer.from('.x')), c);
});

t.test('dotStuffed yields the body then the terminator, 8-bit bytes untouched', async (t) => {
  async function* body(): AsyncGenerator<Uint8Array> {
    yield new Uint8Array([0xff, 0x00, 0x0a]);
    yield new Uint8Array([0x2e, 0xe9]);
  }
  const out: Uint8Array[] = [];
  for await (const c of dotStuffed(body())) out.push(c);
  t.same(Buffer.concat(out), Buffer.from([0xff, 0x00, 0x0a, 0x2e, 0x2e, 0xe9, 0x0d, 0x0a, 0x2e, 0x0d, 0x0a]));
});
