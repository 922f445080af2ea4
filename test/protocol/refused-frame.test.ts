// Issue #22: the agent answers a frame it cannot accept for the one message it names.
// refusedObjectFrame finds that message and says why, for exactly the frames parseObjectFrame
// refuses; a frame that names no message gives null (only then does the session end).
import t from 'tap';
import fc from 'fast-check';
import { encodeFrame, MAX_CONTROL_FRAME, parseObjectFrame, refusedObjectFrame, type MessageFrame } from '../../protocol/wire.ts';

const id = 'a'.repeat(32);
const good: MessageFrame = {
  type: 'message', id, attempt: 1, sender: 's@example.net', recipients: ['alice@example.test'],
  size: 10, sha256: 'b'.repeat(64), receivedAt: 1_800_000_000_000,
};
const frame = (over: Record<string, unknown>): string => JSON.stringify({ ...good, ...over });

t.test('each way a message frame can be wrong is named', async (t) => {
  const cases: [Record<string, unknown>, string][] = [
    [{ recipients: [] }, 'no recipients'],
    [{ recipients: 'alice@example.test' }, 'no recipients'],
    [{ recipients: Array.from({ length: 101 }, (_, i) => `u${i}@example.test`) }, 'more than 100 recipients'],
    [{ recipients: ['a b@example.test'] }, 'bad recipient address'],
    [{ attempt: 0 }, 'bad attempt'],
    [{ sender: '<s@example.net>' }, 'bad sender'],
    [{ size: -1 }, 'bad size'],
    [{ sha256: 'x' }, 'bad sha256 or fetch'],
    [{ fetch: { md5: 'c'.repeat(32), block: '' } }, 'bad sha256 or fetch'],
    [{ receivedAt: 'now' }, 'bad receivedAt'],
    [{ auth: { spf: 'pass' } }, 'bad auth verdicts'],
    [{ prefix: 11 }, 'bad prefix'],
  ];
  for (const [over, why] of cases) {
    const raw = frame(over);
    t.equal(parseObjectFrame(raw), null, `${why}: refused by the parser`);
    t.match(refusedObjectFrame(raw), { type: 'message', id, why }, why);
  }
  t.match(refusedObjectFrame(frame({ recipients: [], attempt: 3 })), { envelope: { attempt: 3, sender: 's@example.net', recipients: [], size: 10 } });
});

t.test('a bounce task, an end, a frame over the size limit', async (t) => {
  const bounce = { type: 'bounce', id, sender: 's@example.net', receivedAt: 0, reason: 'refused', results: [], headers: '' };
  t.match(refusedObjectFrame(JSON.stringify(bounce)), { type: 'bounce', id, why: 'no results' });
  t.match(refusedObjectFrame(JSON.stringify({ ...bounce, reason: 'lost' })), { type: 'bounce', why: 'bad reason' });
  t.match(refusedObjectFrame(JSON.stringify({ type: 'end', id, chunks: -1 })), { type: 'end', id });
  const huge = encodeFrame({ ...good, recipients: Array.from({ length: 100 }, () => `${'"'.repeat(400)}@example.test`) });
  t.ok(huge.length > MAX_CONTROL_FRAME, 'quotes JSON escapes make it too long');
  t.equal(parseObjectFrame(huge), null);
  t.match(refusedObjectFrame(huge), { type: 'message', id, why: /over the limit/ });
});

t.test('a frame that names no message: null', async (t) => {
  for (const raw of ['', 'x', '[]', '{}', '{"type":"message"}', frame({ id: 'A'.repeat(32) }), frame({ id: 5 }),
    JSON.stringify({ type: 'welcome', id, v: 'x' }), `{"type":"message","id":"${id}"${' '.repeat(MAX_CONTROL_FRAME)}}`.replace('"id"', ' "id"')]) {
    t.equal(refusedObjectFrame(raw), null, raw.slice(0, 60));
  }
});

t.test('property: every message frame with a valid id the parser refuses is named, with a reason from the checks', async (t) => {
  const KEEP = Symbol('keep');
  const anyValue = fc.oneof(fc.string(), fc.integer(), fc.constant([]), fc.array(fc.string(), { maxLength: 3 }), fc.constant(null), fc.constant(undefined));
  const field = fc.oneof({ weight: 4, arbitrary: fc.constant(KEEP) }, { weight: 1, arbitrary: anyValue });
  const keys = ['attempt', 'sender', 'recipients', 'size', 'sha256', 'receivedAt', 'prefix'] as const;
  let parsed = 0;
  let named = 0;
  fc.assert(fc.property(fc.tuple(...keys.map(() => field)), (values) => {
    const over = Object.fromEntries(keys.flatMap((k, i) => (values[i] === KEEP ? [] : [[k, values[i]]])));
    const raw = frame(over);
    if (parseObjectFrame(raw) !== null) return ++parsed > 0;
    const r = refusedObjectFrame(raw);
    named++;
    return r !== null && r.id === id && r.type === 'message' && r.why !== 'unreadable';
  }), { numRuns: 2_000 });
  t.ok(parsed > 0 && named > 0, `${parsed} taken, ${named} refused and named`);
});
