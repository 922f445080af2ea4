// The RFC 8601 §5 rename as a streaming byte transform: a forged Authentication-Results
// claiming our authserv-id gets a same-length name, anything else passes byte for byte,
// wherever the chunks are cut.
import t, { type Test } from 'tap';
import { ForgedResultsFilter, MAX_PENDING, RENAMED, renameForged } from '../../edge-agent/delivery/forged-results.ts';

const ID = 'home.example.test';
const b = (s: string): Buffer => Buffer.from(s, 'latin1');

/** Runs `input` through a filter in the pieces given by `cuts` (ascending offsets). */
function run(input: Buffer, cuts: number[]): { out: Buffer; renamed: number } {
  const f = new ForgedResultsFilter(ID);
  const parts: Uint8Array[] = [];
  let at = 0;
  for (const c of [...cuts, input.byteLength]) {
    parts.push(...f.push(input.subarray(at, c)));
    at = c;
  }
  parts.push(...f.end());
  return { out: Buffer.concat(parts), renamed: f.renamed };
}

/** Every single cut, and every pair of cuts for short inputs: the output never depends on them. */
function atEveryCut(t: Test, name: string, input: Buffer, want: Buffer, renamed: number): void {
  const whole = run(input, []);
  t.ok(whole.out.equals(want), `${name}: whole`) || t.equal(whole.out.toString('latin1'), want.toString('latin1'));
  t.equal(whole.renamed, renamed, `${name}: ${renamed} renamed`);
  let bad = 0;
  for (let i = 0; i <= input.byteLength; i++) {
    if (!run(input, [i]).out.equals(want)) bad++;
    if (input.byteLength <= 400) for (let j = i; j <= input.byteLength; j += 3) if (!run(input, [i, j]).out.equals(want)) bad++;
  }
  t.equal(bad, 0, `${name}: the same bytes at every cut`);
  const bytewise = run(input, Array.from({ length: input.byteLength }, (_, i) => i));
  t.ok(bytewise.out.equals(want), `${name}: one byte at a time`);
}

/** `s` with the fields at these offsets renamed (same length). */
function renamedAt(s: Buffer, ...offsets: number[]): Buffer {
  const out = Buffer.from(s);
  for (const o of offsets) RENAMED.copy(out, o);
  return out;
}

t.test('a forged Authentication-Results for our id is renamed; the same length, nothing else changed', async (t) => {
  const msg = b('From: a@example.net\r\nAuthentication-Results: home.example.test; dmarc=pass\r\nSubject: hi\r\n\r\nbody\r\n');
  const at = msg.indexOf('Authentication-Results');
  const want = renamedAt(msg, at);
  t.equal(want.byteLength, msg.byteLength);
  t.match(want.toString('latin1'), /\r\nX-Claimed-Auth-Results: home\.example\.test; dmarc=pass\r\n/);
  atEveryCut(t, 'plain', msg, want, 1);
});

t.test('case, WSP before the colon, comments, quotes and folding before the id: all found', async (t) => {
  const cases = [
    'AUTHENTICATION-RESULTS: HOME.Example.TEST; spf=pass\r\n',
    'authentication-results : home.example.test;\r\n dmarc=pass\r\n',
    'Authentication-Results: (a (nested) \\) comment)\r\n\t home.example.test 1; dkim=pass\r\n',
    'Authentication-Results: "home.example.test"; dmarc=pass\r\n',
    'Authentication-Results:\r\n home.example.test\r\n',
    'Authentication-Results:home.example.test(c);dmarc=pass\r\n',
  ];
  for (const c of cases) {
    const msg = b(`Received: x\r\n${c}To: b@example.test\r\n\r\nAuthentication-Results: home.example.test; in the body\r\n`);
    atEveryCut(t, JSON.stringify(c), msg, renamedAt(msg, 13), 1);
  }
});

t.test('other ids, lookalikes, other fields and the body are kept byte for byte', async (t) => {
  const msg = b([
    'Authentication-Results: mx.cloudflare.net; dmarc=pass',
    'Authentication-Results: home.example.test.evil.net; dmarc=pass',
    'Authentication-Results: home.example.tes; dmarc=pass',
    'Authentication-Results: evil.net; x=home.example.test',
    'ARC-Authentication-Results: i=1; home.example.test; dmarc=pass',
    'X-Authentication-Results: home.example.test; dmarc=pass',
    'Authentication-Results-Extra: home.example.test',
    'Authentication-Results: ; home.example.test',
    'Authentication-Results:',
    'Subject: \xe6\x97\xa5\xff\x80 8-bit',
    ' Authentication-Results: home.example.test; a continuation line',
    '',
    'Authentication-Results: home.example.test; dmarc=pass',
    '',
  ].join('\r\n'));
  atEveryCut(t, 'kept', msg, msg, 0);
});

t.test('LF line ends: renamed the same, and the blank LF line ends the header section', async (t) => {
  const msg = b('Subject: x\nAuthentication-Results: home.example.test; dmarc=pass\n\nAuthentication-Results: home.example.test\n');
  atEveryCut(t, 'LF', msg, renamedAt(msg, 11), 1);
  const fold = b('Authentication-Results:\n\thome.example.test; spf=pass\nAuthentication-Results:\nTo: x\n\n');
  atEveryCut(t, 'LF folded, and one that ends before an id', fold, renamedAt(fold, 0), 1);
});

t.test('several forged fields, 8-bit bytes around them, the message ending inside the header', async (t) => {
  const msg = b('Authentication-Results: home.example.test; a\r\nX: \xff\xfe\r\nauthentication-results: home.example.test');
  atEveryCut(t, 'two, no body', msg, renamedAt(msg, 0, msg.lastIndexOf('authentication-results')), 2);
  const cut = b('Authentication-Res');
  atEveryCut(t, 'a name cut short at the end', cut, cut, 0);
});

t.test('a field whose id cannot be read within MAX_PENDING is renamed (fail closed), held bytes stay bounded', async (t) => {
  const comment = '(' + 'x'.repeat(MAX_PENDING + 100) + ')';
  const msg = b(`Authentication-Results: ${comment} home.example.test; dmarc=pass\r\nTo: a\r\n\r\nbody`);
  const { out, renamed } = run(msg, [1000, 3000, 4500]);
  t.ok(out.equals(renamedAt(msg, 0)), 'renamed, every other byte kept');
  t.equal(renamed, 1);
  const long = b(`Authentication-Results: ${'a'.repeat(MAX_PENDING * 2)}; x\r\n\r\n`);
  t.ok(run(long, [7]).out.equals(long), 'a long id that is not ours is decided once it is longer than ours');
});

t.test('renameForged streams an async iterable and reports the count', async (t) => {
  const msg = b('Authentication-Results: home.example.test; dmarc=pass\r\n\r\nbody');
  async function* chunks(): AsyncIterable<Uint8Array> { yield msg.subarray(0, 30); yield msg.subarray(30); }
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const p of renameForged(chunks(), ID, (k) => { n = k; })) parts.push(p);
  t.ok(Buffer.concat(parts).equals(renamedAt(msg, 0)));
  t.equal(n, 1);
});
