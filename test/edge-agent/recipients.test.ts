// The recipients file as the agent reads and publishes it: canonical form, digest, errors
// that name file:line, frames the object accepts (also for 10,000 addresses), and the
// watcher that republishes an edit but keeps the last good list over a bad one.
import t from 'tap';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { MAX_CONTROL_FRAME, encodeFrame, parseAgentFrame, type RecipientsFrame } from '../../protocol/wire.ts';
import { FRAME_BUDGET, RecipientsSource, listDigest, parseRecipients, recipientFrames } from '../../edge-agent/session/recipients.ts';
import type { LogEvent } from './agent-process.ts';
import { until } from './in-process.ts';

const sha = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

t.test('one entry a line: trimmed, lowercased, comments and blanks skipped, sorted and unique', async (t) => {
  const text = '# users\n  Bob@Example.test \r\nalice@example.test\n\n@CatchAll.test\n\t# aliases\nalice@example.test\n';
  t.same(parseRecipients(text, '/r'), { ok: true, entries: ['@catchall.test', 'alice@example.test', 'bob@example.test'] });
  t.same(parseRecipients('', '/r'), { ok: true, entries: [] });
  t.same(parseRecipients('# only a comment\n', '/r'), { ok: true, entries: [] });
});

t.test('a bad line is named by file:line', async (t) => {
  for (const [text, line] of [
    ['alice@example.test\nnot-an-address\n', 2], ['a@b.test\n\nx y@example.test', 3], ['<a@example.test>', 1],
    ['a@', 1], ['a@exa_mple.test', 1], ['a@b@c.test', 1], [`${'a'.repeat(320)}@example.test`, 1], ['caf\uFFFD@example.test', 1],
  ] as const) {
    const r = parseRecipients(text, '/etc/mailbridge/recipients');
    t.match(r, { ok: false, error: new RegExp(`^/etc/mailbridge/recipients:${line}: not an address or @domain`) }, JSON.stringify(text));
  }
});

t.test('digest: SHA-256 hex of the entries joined with LF', async (t) => {
  t.equal(listDigest(['a@x.test', 'b@x.test']), sha('a@x.test\nb@x.test'));
  t.equal(listDigest([]), sha(''));
});

t.test('no entries: one empty frame (the object then has no list)', async (t) => {
  const r = recipientFrames([], '+');
  t.same(r, { ok: true, frames: [{ type: 'recipients', digest: sha(''), part: 0, parts: 1, delimiter: '+', entries: [] }] });
});

t.test('10,000 addresses: every frame passes the object parser, stays under the budget and the parts rebuild the list', async (t) => {
  const lines = Array.from({ length: 10_000 }, (_, i) => `User.${String(i).padStart(5, '0')}+x-${'q'.repeat(i % 40)}@Example${i % 7}.test`);
  const parsed = parseRecipients(lines.join('\n') + '\n@example0.test\n', '/r');
  if (!parsed.ok) throw new Error(parsed.error);
  t.equal(parsed.entries.length, 10_001);
  const r = recipientFrames(parsed.entries, '+');
  if (!r.ok) throw new Error(r.error);
  t.ok(r.frames.length > 1, `split into ${r.frames.length} frames`);
  const back: string[] = [];
  for (const [i, f] of r.frames.entries()) {
    const text = encodeFrame(f);
    t.ok(text.length <= FRAME_BUDGET && FRAME_BUDGET < MAX_CONTROL_FRAME, `frame ${i}: ${text.length} characters`);
    const p = parseAgentFrame(text) as RecipientsFrame | null;
    if (!p) throw new Error(`frame ${i} refused by parseAgentFrame`);
    t.match(p, { type: 'recipients', part: i, parts: r.frames.length, delimiter: '+', digest: listDigest(parsed.entries) });
    back.push(...p.entries);
  }
  t.same(back, parsed.entries, 'the parts in order are the list');
});

t.test('a list longer than the protocol allows is an error, not a cut list', async (t) => {
  const many = Array.from({ length: 40_000 }, (_, i) => `${'x'.repeat(300)}${i}@example.test`);
  t.match(recipientFrames(many, ''), { ok: false, error: /need \d+ frames; the protocol allows 200/ });
});

t.test('the source: a bad file at start is a ConfigError naming file:line', async (t) => {
  const dir = t.testdir({ recipients: 'alice@example.test\nnope\n' });
  t.throws(() => new RecipientsSource({ file: join(dir, 'recipients'), delimiter: '', log: () => {} }),
    { name: 'ConfigError', message: `recipientsFile: ${join(dir, 'recipients')}:2: not an address or @domain: "nope"` });
  t.throws(() => new RecipientsSource({ file: join(dir, 'missing'), delimiter: '', log: () => {} }), { name: 'ConfigError', message: /cannot read/ });
});

t.test('the source without a file publishes the empty list', async (t) => {
  const s = new RecipientsSource({ file: null, delimiter: '', log: () => {} });
  t.same(s.frames, [{ type: 'recipients', digest: sha(''), part: 0, parts: 1, delimiter: '', entries: [] }]);
});

t.test('the source follows edits (also by rename), keeps the last good list over a bad edit', async (t) => {
  const dir = t.testdir({ recipients: 'alice@example.test\n' });
  const file = join(dir, 'recipients');
  const events: LogEvent[] = [];
  const s = new RecipientsSource({ file, delimiter: '+', log: (event, f = {}) => events.push({ event, ...f }), pollMs: 50 });
  t.teardown(() => s.stop());
  const published: string[][] = [];
  s.onChange = (frames) => published.push(frames.flatMap((f) => f.entries));
  s.start();
  t.same(s.frames.flatMap((f) => f.entries), ['alice@example.test']);

  writeFileSync(file, 'alice@example.test\nbob@example.test\n');
  await until('the edit published', () => published.length === 1);
  t.same(published[0], ['alice@example.test', 'bob@example.test']);

  writeFileSync(file, 'alice@example.test\nbob@example.test\nbroken line\n');
  await until('the bad edit logged', () => events.some((e) => e.event === 'recipients.invalid'));
  t.match(events.find((e) => e.event === 'recipients.invalid'), { error: `${file}:3: not an address or @domain: "broken line"` });
  t.equal(published.length, 1, 'nothing published');
  t.same(s.frames.flatMap((f) => f.entries), ['alice@example.test', 'bob@example.test'], 'the last good list stays');

  // An editor's way: write a new file, rename it over the old one.
  writeFileSync(join(dir, 'recipients.tmp'), '@example.test\n');
  renameSync(join(dir, 'recipients.tmp'), file);
  await until('the replaced file published', () => published.length === 2);
  t.same(published[1], ['@example.test']);
});
