// The agent's log lines: levels from one table, journald priority prefixes, the
// Postfix-like per-recipient delivery lines in both formats, and the hints of a
// failed connection.
import t from 'tap';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { fstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { levelOf } from '../../protocol/log-levels.ts';
import { createLogger, maillogText, onJournal } from '../../edge-agent/ops/log.ts';
import { deliveryLines, relayName, seconds } from '../../edge-agent/ops/delivery-log.ts';
import { connectHint } from '../../edge-agent/session/hints.ts';
import { parseTarget } from '../../lmtp-proxy/target.ts';
import type { Settled } from '../../edge-agent/session/session.ts';
import { workerFields } from '../../local/relay.ts';

const ID = '0123456789abcdef0123456789abcdef';
const NOW = Date.UTC(2026, 11, 2, 12, 0, 0);
const at = () => new Date(NOW);

function settled(over: Partial<Settled>): Settled {
  return {
    id: ID, attempt: 2, recipients: 3, bytes: 100, ms: 400, outcome: 'acked',
    sender: 'alice@example.net', to: ['a@home.test', 'b@home.test', 'c@home.test'], receivedAt: NOW - 12_300,
    results: [
      { recipient: 'a@home.test', code: 250, enhanced: '2.0.0', text: '<a@home.test> Saved', outcome: 'delivered' },
      { recipient: 'b@home.test', code: 452, enhanced: '4.2.2', text: 'Mailbox is full', outcome: 'tempfail' },
      { recipient: 'c@home.test', code: 550, enhanced: null, text: 'No such user', outcome: 'permfail' },
    ],
    error: null, note: {}, ...over,
  };
}

t.test('the level comes from the event name, one table for the Worker and the agent', async (t) => {
  for (const e of ['delivery.deferred', 'delivery.bounced', 'bounce.failed', 'bounce.deferred', 'connect.failed', 'session.violation',
    'target.down', 'recipients.invalid', 'journal.failed', 'message.failed', 'bounce.impossible']) t.equal(levelOf(e), 'warning', e);
  for (const e of ['agent.stop-timeout', 'config.invalid']) t.equal(levelOf(e), 'error', e);
  for (const e of ['delivery.sent', 'session.ready', 'agent.started', 'bounce.sent']) t.equal(levelOf(e), 'info', e);
  for (const e of ['deliver.acked', 'ingest.queued', 'message.leased']) t.equal(levelOf(e), 'debug', e);
});

t.test('JSON lines: a level field where not info, a caller\'s level ignored, <N> prefix only on the journal', async (t) => {
  const lines: string[] = [];
  const plain = createLogger({ write: (l) => lines.push(l), now: at, journal: false });
  plain('session.ready', { session: 's1' });
  plain('bounce.failed', { level: 'info', id: ID });
  t.same(lines.map((l) => JSON.parse(l)), [
    { ts: '2026-12-02T12:00:00.000Z', event: 'session.ready', session: 's1' },
    { ts: '2026-12-02T12:00:00.000Z', event: 'bounce.failed', level: 'warning', id: ID },
  ]);
  lines.length = 0;
  const journal = createLogger({ write: (l) => lines.push(l), now: at, journal: true });
  journal('session.ready', {});
  journal('connect.failed', {});
  journal('agent.stop-timeout', {});
  journal('deliver.acked', {});
  t.same(lines.map((l) => l.slice(0, 4)), ['<6>{', '<4>{', '<3>{', '<7>{'], 'sd-daemon priorities: info 6, warning 4, error 3, debug 7');
  t.same(JSON.parse(lines[1]?.slice(3) ?? ''), { ts: '2026-12-02T12:00:00.000Z', event: 'connect.failed', level: 'warning' }, 'the rest is the JSON line');
});

t.test('a forwarded Worker line is an object with its own level (npm start, LOG_LEVEL=debug)', async (t) => {
  const f = workerFields(JSON.stringify({ event: 'message.failed', level: 'warning', id: ID, state: 'bouncing' }));
  t.same(f, { worker: 'message.failed', id: ID, state: 'bouncing' });
  t.same(workerFields('workerd/server: some warning'), { line: 'workerd/server: some warning' }, 'not JSON: kept as a string');
  t.same(workerFields('[1,2]'), { line: '[1,2]' });
  const lines: string[] = [];
  createLogger({ write: (l) => lines.push(l), now: at, journal: true })('worker', f);
  t.equal(lines[0], `<4>{"ts":"2026-12-02T12:00:00.000Z","event":"worker","level":"warning","worker":"message.failed","id":"${ID}","state":"bouncing"}`);
});

t.test('one delivery line per recipient, statuses mapped from the outcomes', async (t) => {
  const relay = relayName(parseTarget('lmtp://127.0.0.1:24'));
  const lines = deliveryLines(settled({}), relay, NOW);
  t.same(lines.map((l) => l.event), ['delivery.sent', 'delivery.deferred', 'delivery.bounced']);
  t.same(lines[0]?.fields, {
    id: ID, from: 'alice@example.net', to: 'a@home.test', relay: '127.0.0.1:24', attempt: 2,
    delay: 12.3, delays: '11.9/0.4', dsn: '2.0.0', status: 'sent', reply: '250 2.0.0 <a@home.test> Saved',
  });
  t.match(lines[1]?.fields, { to: 'b@home.test', dsn: '4.2.2', status: 'deferred', reply: '452 4.2.2 Mailbox is full' });
  t.match(lines[2]?.fields, { to: 'c@home.test', dsn: '5.0.0', status: 'bounced', reply: '550 No such user' }, 'no enhanced code: the class');

  const journal = deliveryLines(settled({ outcome: 'journal', results: settled({}).results?.slice(0, 1) ?? null }), relay, NOW);
  t.match(journal, [{ event: 'delivery.sent', fields: { relay: 'journal' } }], 'answered from the journal: relay=journal');
  const nacked = deliveryLines(settled({ outcome: 'unavailable', results: null, error: 'journal: disk full' }), relay, NOW);
  t.same(nacked.map((l) => [l.fields.to, l.fields.status, l.fields.dsn, l.fields.reply]),
    [['a@home.test', 'deferred', '4.0.0', 'journal: disk full'], ['b@home.test', 'deferred', '4.0.0', 'journal: disk full'], ['c@home.test', 'deferred', '4.0.0', 'journal: disk full']]);
  t.same(deliveryLines(settled({ outcome: 'shutdown', results: null }), relay, NOW), [], 'handed back: no attempt ended');
  t.same(deliveryLines(settled({ outcome: 'disconnected' }), relay, NOW), []);
  const local = deliveryLines(settled({ results: [{ recipient: 'a@home.test', code: 0, enhanced: null, text: 'ETIMEDOUT: no final reply', outcome: 'tempfail' }] }), relay, NOW);
  t.match(local[0]?.fields, { status: 'deferred', dsn: '4.0.0', reply: 'ETIMEDOUT: no final reply' });
  t.equal(relayName(parseTarget('lmtp+unix:/run/dovecot/lmtp')), '/run/dovecot/lmtp');
  t.equal(relayName(parseTarget('lmtp://[::1]:24')), '[::1]:24');
  t.same([seconds(-5), seconds(1234), seconds(12_345), seconds(123_456)], [0, 1.23, 12.3, 123]);
});

t.test('maillog format: the Postfix line, grep-able by status=', async (t) => {
  const [sent, deferred] = deliveryLines(settled({ sender: '' }), '127.0.0.1:24', NOW);
  t.equal(maillogText(sent?.event ?? '', sent?.fields ?? {}),
    `${ID}: from=<>, to=<a@home.test>, relay=127.0.0.1:24, attempt=2, delay=12.3, delays=11.9/0.4, dsn=2.0.0, status=sent (250 2.0.0 <a@home.test> Saved)`);
  t.match(maillogText(deferred?.event ?? '', deferred?.fields ?? {}), / status=deferred \(452 4\.2\.2 Mailbox is full\)$/);
  t.equal(maillogText('session.closed', { code: 1006, reason: '', upMs: 5, why: 'a b' }), 'session.closed: code=1006, reason="", upMs=5, why="a b"');
  const lines: string[] = [];
  createLogger({ format: 'maillog', write: (l) => lines.push(l), now: at, journal: false })(sent?.event ?? '', sent?.fields);
  createLogger({ format: 'maillog', write: (l) => lines.push(l), now: at, journal: true })(deferred?.event ?? '', deferred?.fields);
  t.match(lines[0], /^2026-12-02T12:00:00\.000Z [0-9a-f]{32}: from=<>, to=<a@home\.test>, .* status=sent \(/, 'a timestamp off the journal');
  t.match(lines[1], /^<4>[0-9a-f]{32}: from=<>, to=<b@home\.test>, .* status=deferred \(/, 'on the journal: its priority, no timestamp');
});

t.test('JOURNAL_STREAM counts only when it names the stream the line goes to', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-log-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const f = await open(join(dir, 'out'), 'w');
  t.teardown(() => f.close());
  const st = fstatSync(f.fd, { bigint: true });
  t.equal(onJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, f.fd), true, 'device:inode of this fd');
  t.equal(onJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino + 1n}` }, f.fd), false, 'another stream: inherited, not ours');
  t.equal(onJournal({}, f.fd), false, 'absent');
  t.equal(onJournal({ JOURNAL_STREAM: 'yes' }, f.fd), false, 'malformed');
});

t.test('connect.failed says what to check', async (t) => {
  const url = 'wss://relay.example.workers.dev/agent';
  t.match(connectHint('upgrade refused: HTTP 401', url), /refused the token: check MAILBRIDGE_TOKEN \/ tokenFile against the Worker's AGENT_TOKENS/);
  t.match(connectHint('upgrade refused: HTTP 404', url), /^no \/agent here: check workerUrl/);
  t.equal(connectHint('getaddrinfo ENOTFOUND relay.example.workers.dev', url), 'cannot reach relay.example.workers.dev: check workerUrl and the network');
  t.equal(connectHint('connect ECONNREFUSED 127.0.0.1:9', 'ws://127.0.0.1:9/agent'), 'cannot reach 127.0.0.1:9: check workerUrl and the network');
  t.equal(connectHint('connection closed before welcome: 1008 bad hello', url), null, 'the error says it already');
});

t.test('controls (C0, DEL, C1, U+2028/2029) are escaped in every field of both formats', async (t) => {
  const evil = 'x\x1b[2J\x07\r\n\x7f\x9b31m\x85\u2028\u2029\\u001b';
  // eslint-disable-next-line no-control-regex
  const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
  const [sent] = deliveryLines(settled({
    id: ID, sender: `s${evil}@a.test`, to: [`a${evil}@home.test`], note: { subject: `Hi ${evil}` },
    results: [{ recipient: `a${evil}@home.test`, code: 250, enhanced: '2.0.0', text: `Saved ${evil}`, outcome: 'delivered' }],
  }), `relay${evil}`, NOW);
  const other = { [`k${evil}`]: `v${evil}`, plain: evil, nested: { v: evil } };
  for (const format of ['json', 'maillog'] as const) {
    const lines: string[] = [];
    const log = createLogger({ format, write: (l) => lines.push(l), now: at, journal: false });
    log(sent?.event ?? '', sent?.fields);
    log('session.closed', other);
    log(`odd${evil}`, {});
    t.equal(lines.length, 3);
    for (const l of lines) t.notMatch(l, CONTROL, `${format}: no raw control in ${JSON.stringify(l)}`);
    if (format === 'json') {
      t.match(JSON.parse(lines[0] ?? ''), { from: `s${evil}@a.test`, to: `a${evil}@home.test`, subject: `Hi ${evil}`, reply: `250 2.0.0 Saved ${evil}` }, 'JSON: the same text comes back');
      t.match(JSON.parse(lines[1] ?? ''), { [`k${evil}`]: `v${evil}`, nested: { v: evil } });
    } else {
      t.match(lines[0], /from=<sx\\u001b\[2J\\u0007\\u000d\\u000a\\u007f\\u009b31m\\u0085\\u2028\\u2029/, 'maillog: escapes in the Postfix line');
      t.match(lines[0], /\\\\u001b@a\.test>/, 'a backslash in the text is doubled: an escape cannot be forged');
      t.match(lines[1], /plain="x\\u001b\[2J\\u0007\\r\\n\\u007f\\u009b31m\\u0085\\u2028\\u2029\\\\u001b"/, 'a value with controls is quoted and escaped');
    }
  }
});
