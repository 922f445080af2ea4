// Cloudflare's verdicts are read only from fields Cloudflare wrote (topmost, a Cloudflare
// authserv-id); a verdict not found is 'none', and a sender's own field is never believed.
import t from 'tap';
import { blockVerdicts, cloudflareVerdicts, firstField, parseResults } from '../../bridge-worker/cf-auth-results.ts';
import { NO_VERDICTS } from '../../protocol/wire.ts';

const h = (fields: [string, string][]): Headers => {
  const headers = new Headers();
  for (const [k, v] of fields) headers.append(k, v);
  return headers;
};

t.test('verdicts from Cloudflare\'s ARC-Authentication-Results, the topmost one only', async (t) => {
  const v = cloudflareVerdicts(h([
    ['ARC-Authentication-Results', 'i=2; mx.cloudflare.net; dkim=pass header.d=example.net (comment, with comma); spf=softfail smtp.mailfrom=a@example.net; dmarc=fail (p=reject) header.from=example.net; arc=pass'],
    ['ARC-Authentication-Results', 'i=1; mx.cloudflare.net; dkim=fail; spf=pass; dmarc=pass; arc=none'],
  ]));
  t.same(v, { spf: 'softfail', dkim: 'pass', dmarc: 'fail', arc: 'pass' });
});

t.test('a sender\'s field for another host is not believed; missing verdicts are none', async (t) => {
  t.same(cloudflareVerdicts(h([['Authentication-Results', 'home.example.org; dmarc=pass; spf=pass']])), NO_VERDICTS);
  t.same(cloudflareVerdicts(h([['ARC-Authentication-Results', 'i=1; mx.google.com; arc=none']])), NO_VERDICTS, 'an upstream forwarder\'s (workerd#6740)');
  t.same(cloudflareVerdicts(h([])), NO_VERDICTS);
  t.same(cloudflareVerdicts(undefined), NO_VERDICTS);
  t.same(cloudflareVerdicts(h([['Authentication-Results', 'mx.cloudflare.net; dmarc=pass']])),
    { ...NO_VERDICTS, dmarc: 'pass' }, 'only what was said');
  t.same(cloudflareVerdicts(h([['Authentication-Results', 'mx.cloudflare.net; dmarc=bestguesspass; spf=hardfail']])),
    { ...NO_VERDICTS, spf: 'fail' }, 'a word that is not an RFC 8601 keyword is not a verdict');
});

t.test('ARC first, then Authentication-Results, then Received-SPF for spf', async (t) => {
  t.same(cloudflareVerdicts(h([
    ['ARC-Authentication-Results', 'i=1; mx.cloudflare.net; dmarc=pass'],
    ['Authentication-Results', 'mx.cloudflare.net; dmarc=fail; dkim=pass'],
    ['Received-SPF', 'fail (mx.cloudflare.net: domain of a@example.net does not designate 192.0.2.1 as permitted sender)'],
  ])), { spf: 'fail', dkim: 'pass', dmarc: 'pass', arc: 'none' });
  t.same(cloudflareVerdicts(h([['Received-SPF', 'pass (evil.example: trust me)']])), NO_VERDICTS, 'Received-SPF of another host');
});

t.test('firstField cuts at the first top-level comma; parseResults reads the grammar', async (t) => {
  t.equal(firstField('a; spf=pass (x, y) reason="p, q", b; dmarc=fail'), 'a; spf=pass (x, y) reason="p, q"');
  t.same(parseResults('"mx.cloudflare.net" 1; dkim=fail; dkim=pass; dkim=fail')?.results.get('dkim'), 'pass', 'one dkim pass is a pass');
  t.equal(parseResults('(c) mx.cloudflare.net; none')?.authservId, 'mx.cloudflare.net');
  t.equal(parseResults('mx.cloudflare.net; spf=pass', true), null, 'ARC needs i=');
});

t.test('blockVerdicts reads Cloudflare\'s block and nothing else', async (t) => {
  const block = Buffer.from(
    'Received: from mx.example.net (192.0.2.1)\r\n        by cloudflare-email.com (unknown) id AbCdEfGhIjKl\r\n        for <a@example.test>; Wed, 02 Dec 2026 12:00:00 +0000\r\n' +
    'ARC-Authentication-Results: i=1; mx.cloudflare.net;\r\n\tdkim=pass;\r\n\tdmarc=fail header.from=example.net;\r\n\tspf=softfail smtp.mailfrom=a@example.net\r\n');
  t.same(blockVerdicts(block), { spf: 'softfail', dkim: 'pass', dmarc: 'fail', arc: 'none' }, 'folded fields unfolded');
  t.same(blockVerdicts(Buffer.alloc(0)), NO_VERDICTS, 'no block found: none for each, never a guess');
});
