import t from 'tap';
import { formatTarget, parseTarget } from '../../lmtp-proxy/target.ts';

t.test('parses the three forms and formats them back', async (t) => {
  const cases: [string, unknown, string][] = [
    ['lmtp://127.0.0.1:24', { protocol: 'lmtp', host: '127.0.0.1', port: 24 }, 'lmtp://127.0.0.1:24'],
    ['smtp://mx.example.org:2525', { protocol: 'smtp', host: 'mx.example.org', port: 2525 }, 'smtp://mx.example.org:2525'],
    ['lmtp://[::1]:24', { protocol: 'lmtp', host: '::1', port: 24 }, 'lmtp://[::1]:24'],
    ['lmtp+unix:/run/dovecot/lmtp', { protocol: 'lmtp', path: '/run/dovecot/lmtp' }, 'lmtp+unix:/run/dovecot/lmtp'],
    ['smtp://mx', { protocol: 'smtp', host: 'mx', port: 25 }, 'smtp://mx:25'],
    ['lmtp://localhost/', { protocol: 'lmtp', host: 'localhost', port: 24 }, 'lmtp://localhost:24'],
  ];
  for (const [url, parsed, formatted] of cases) {
    const p = parseTarget(url);
    t.same(p, parsed, url);
    t.equal(formatTarget(p), formatted);
  }
});

t.test('rejects bad targets with a TypeError naming the value', async (t) => {
  for (const bad of [
    'http://x:24', 'lmtp://x:0', 'lmtp://x:65536', 'lmtp://user@x:24', 'lmtp://x:24/path', 'lmtp://x:24?a',
    'lmtp:x', 'lmtp+unix:relative/path', 'lmtp+unix:/a\nb', 'lmtp://x y:24', '', 'LMTP://x:24',
  ]) {
    try {
      parseTarget(bad);
      t.fail(`accepted ${JSON.stringify(bad)}`);
    } catch (e) {
      t.ok(e instanceof TypeError && e.message.includes(JSON.stringify(bad)), (e as Error).message);
    }
  }
});
