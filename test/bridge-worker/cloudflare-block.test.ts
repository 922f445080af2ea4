// The Worker finds Cloudflare's block in each real-shaped message.raw of the corpus, strips
// exactly it (never into the sender's own Received/ARC fields), and strips nothing when unsure;
// the local stand-in's block is one it finds, fresh on every attempt, with honest verdicts.
import t from 'tap';
import { MAX_BLOCK_BYTES, cloudflareBlockLength } from '../../bridge-worker/cloudflare-block.ts';
import { blockVerdicts } from '../../bridge-worker/cf-auth-results.ts';
import { NO_VERDICTS } from '../../protocol/wire.ts';
import { cloudflareBlock } from '../../local/email-routing.ts';
import { CLOUDFLARE_SAMPLES } from '../corpus/cloudflare.ts';

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

for (const s of CLOUDFLARE_SAMPLES) {
  t.test(s.name, async (t) => {
    const raw = bytes(s.block + s.message);
    const n = cloudflareBlockLength(raw);
    if (s.strip) {
      t.equal(n, s.block.length, 'the block, and nothing of the sender\'s message');
      t.same(raw.subarray(n), bytes(s.message), 'what is left is the sender\'s message, byte for byte');
    } else {
      t.equal(n, 0, 'nothing stripped');
    }
    // In a chunk cut anywhere before the block's end, the end is not in sight: nothing stripped.
    if (s.strip) {
      for (const cut of [1, Math.floor(n / 2), n - 1, n]) {
        t.equal(cloudflareBlockLength(raw.subarray(0, cut)), 0, `first ${cut} bytes only: unsure, nothing stripped`);
      }
    }
  });
}

t.test('the stand-in\'s block is found whole, in every shape, with the sender\'s message after it', async (t) => {
  const message = bytes('Received: from mta.sender.example by mx.sender.example; Mon, 1 Jun 2026 10:00:00 +0000\r\nSubject: x\r\n\r\nx\r\n');
  for (const receivedSpf of [true, false]) {
    for (const authenticationResults of [true, false]) {
      for (const xcf of [true, false]) {
        const block = cloudflareBlock('a@sender.example', 'alice@example.test', { receivedSpf, authenticationResults, xcf });
        t.ok(block.byteLength < MAX_BLOCK_BYTES);
        t.equal(cloudflareBlockLength(Buffer.concat([block, message])), block.byteLength, JSON.stringify({ receivedSpf, authenticationResults, xcf }));
      }
    }
  }
});

t.test('the stand-in writes a fresh block each attempt: new id, signatures and date', async (t) => {
  const a = cloudflareBlock('a@sender.example', 'alice@example.test', { now: new Date(1_780_000_000_000) }).toString('latin1');
  const b = cloudflareBlock('a@sender.example', 'alice@example.test', { now: new Date(1_780_000_060_000) }).toString('latin1');
  const field = (s: string, re: RegExp): string => re.exec(s)?.[1] ?? '';
  t.not(field(a, / id ([A-Za-z0-9]{12})\r\n/), field(b, / id ([A-Za-z0-9]{12})\r\n/), 'Received id');
  t.not(field(a, /ARC-Seal:[^]*?b=([^\r]+)/), field(b, /ARC-Seal:[^]*?b=([^\r]+)/), 'ARC-Seal b=');
  t.not(field(a, /\tt=(\d+);/), field(b, /\tt=(\d+);/), 'ARC-Message-Signature t=');
  t.match(a, /^Received: from localhost \(127\.0\.0\.1\)\r\n {8}by cloudflare-email\.com \(unknown\) id [A-Za-z0-9]{12}\r\n {8}for <alice@example\.test>; \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000\r\nARC-Seal: i=1; /);
  const order = [...a.matchAll(/^([A-Za-z-]+):/gm)].map((m) => m[1]);
  t.same(order, ['Received', 'ARC-Seal', 'ARC-Message-Signature', 'ARC-Authentication-Results', 'Received-SPF', 'Authentication-Results', 'X-CF-Stand-In']);
});

t.test('the stand-in\'s verdicts are none (it checks nothing) unless a test sets them', async (t) => {
  const plain = cloudflareBlock('a@sender.example', 'alice@example.test').toString('latin1');
  t.match(plain, /ARC-Authentication-Results: i=1; mx\.cloudflare\.net;\r\n\tdkim=none;\r\n\tdmarc=none header\.from=sender\.example;\r\n\tspf=none /);
  t.match(plain, /Authentication-Results: mx\.cloudflare\.net;\r\n\tdkim=none;/);
  const set = cloudflareBlock('a@sender.example', 'alice@example.test', { verdicts: { dkim: 'pass', spf: 'fail', dmarc: 'reject' } }).toString('latin1');
  t.match(set, /\tdkim=pass;\r\n\tdmarc=reject header\.from=sender\.example;\r\n\tspf=fail /);
  t.match(set, /Received-SPF: fail /);
});

t.test('an empty message under a block: the block is the whole message, and only then', async (t) => {
  const block = Buffer.from('Received: from mx.example.net (192.0.2.1)\r\n        by cloudflare-email.com (unknown) id AbCdEfGhIjKl\r\n        for <a@example.test>; Wed, 02 Dec 2026 12:00:00 +0000\r\nARC-Seal: i=1; a=rsa-sha256; s=2023; d=cloudflare-email.com; cv=none; b=x\r\n');
  t.equal(cloudflareBlockLength(block, true), block.byteLength, 'the whole message: all of it is the block');
  t.equal(cloudflareBlockLength(block), 0, 'a first chunk that may go on: unsure, nothing stripped');
});

t.test('below a block with no verdicts (workerd#6740), a sender\'s fields under Cloudflare\'s names are the sender\'s', async (t) => {
  const block = cloudflareBlock('a@sender.example', 'alice@example.test', { noVerdicts: true });
  t.same([...block.toString('latin1').matchAll(/^([A-Za-z-]+):/gm)].map((m) => m[1]), ['Received', 'ARC-Seal', 'ARC-Message-Signature']);
  const own = [
    'Authentication-Results: mx.cloudflare.net; dkim=pass; dmarc=pass header.from=bank.example; spf=pass; arc=pass\r\n',
    'Received-SPF: pass (mx.cloudflare.net: domain of alerts@bank.example designates 192.0.2.9 as permitted sender)\r\n',
    'X-CF-Spamh-Score: 0\r\n',
  ];
  for (const first of own) {
    const raw = Buffer.concat([block, bytes(first + own.join('') + 'Subject: x\r\n\r\nx\r\n')]);
    const n = cloudflareBlockLength(raw);
    t.equal(n, block.byteLength, `not in the block: ${first.slice(0, 30)}`);
    t.same(blockVerdicts(raw.subarray(0, n)), NO_VERDICTS, 'and it fills no verdict');
  }
  // Below Cloudflare's own verdicts the same names are Cloudflare's, as its later samples write them.
  const full = cloudflareBlock('a@sender.example', 'alice@example.test', { verdicts: { spf: 'pass' } });
  t.equal(cloudflareBlockLength(Buffer.concat([full, bytes('Subject: x\r\n\r\nx\r\n')])), full.byteLength);
  t.equal(blockVerdicts(full).spf, 'pass');
});
