// What the Worker and its queue object log per delivered message: one info line a side
// (email.accepted with the verdict, message.acked with what ingest and lease knew); the steps
// between only with LOG_LEVEL=debug. A bad LOG_LEVEL fails like any bad var.
import t, { type Test } from 'tap';
import type { MessageFrame } from '../../protocol/wire.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker, type TestWorker } from '../helpers/worker.ts';

type Event = { event: string } & Record<string, unknown>;

function events(w: TestWorker): Event[] {
  return w.logs.flatMap((l) => {
    try {
      const e: unknown = JSON.parse(l);
      return typeof e === 'object' && e !== null && typeof (e as Event).event === 'string' ? [e as Event] : [];
    } catch {
      return [];
    }
  });
}

async function eventually<T>(what: string, read: () => T | undefined, ms = 10_000): Promise<T> {
  for (const until = Date.now() + ms; ;) {
    const v = read();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One message through an agent that acks it; returns its id once the object logged the ack. */
async function deliverOne(t: Test, w: TestWorker, body: Buffer): Promise<string> {
  const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  t.teardown(() => a.close());
  await a.hello({ agent: 'log-agent', window: 4, credit: 8 << 20, fetch: true });
  // Without a Cloudflare block: the sizes logged are then those of `body`.
  const post = w.post('s@sender.test', 'alice@example.test', body, { block: false });
  const m = await a.until((s) => s.flatMap((x) => (x.kind === 'frame' && x.frame.type === 'message' ? [x.frame] : []))[0]) as MessageFrame;
  await a.received(m.id);
  a.send({ type: 'ack', id: m.id, results: [{ recipient: 'alice@example.test', code: 250, enhanced: '2.0.0', text: 'Saved', outcome: 'delivered' }] });
  const r = await post;
  t.equal(r.status, 200);
  t.equal(r.body.id, m.id);
  await eventually('message.acked', () => events(w).find((e) => e.event === 'message.acked' && e.id === m.id));
  return m.id;
}

const body = Buffer.from('Subject: log\r\n\r\nhello\r\n');

t.test('info (default): one line per delivered message in the Worker and one in the object', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 5_000 });
  t.teardown(() => w.stop());
  const id = await deliverOne(t, w, body);
  const mine = events(w).filter((e) => JSON.stringify(e).includes(id));
  t.same(mine.map((e) => e.event).sort(), ['email.accepted', 'message.acked'], 'two lines name the message: one per side');
  t.match(mine.find((e) => e.event === 'email.accepted'), { event: 'email.accepted', id, duplicate: false, size: body.length, verdict: 'final' }, 'the verdict is in email.accepted');
  t.match(mine.find((e) => e.event === 'message.acked'), {
    event: 'message.acked', id, attempt: 1, outcomes: ['delivered'], size: body.length, body: 'r2', chunks: 0, recipients: 1,
    session: String, ageMs: Number,
  }, 'message.acked carries what ingest.queued and message.leased said');
  const names = new Set(events(w).map((e) => e.event));
  for (const gone of ['email.verdict', 'ingest.queued', 'message.leased']) t.notOk(names.has(gone), `no ${gone}`);
});

t.test('LOG_LEVEL=debug adds ingest.queued and message.leased', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 5_000, vars: { LOG_LEVEL: 'debug' } });
  t.teardown(() => w.stop());
  const id = await deliverOne(t, w, body);
  const mine = events(w).filter((e) => e.id === id);
  t.same(mine.map((e) => e.event).sort(), ['email.accepted', 'ingest.queued', 'message.acked', 'message.leased']);
  t.match(mine.find((e) => e.event === 'ingest.queued'), { size: body.length, body: 'r2', chunks: 0, recipients: 1 });
  t.match(mine.find((e) => e.event === 'message.leased'), { attempt: 1, size: body.length });
});

t.test('a bad LOG_LEVEL fails the Worker with a message naming it', async (t) => {
  const w = await startTestWorker({ vars: { LOG_LEVEL: 'verbose' } });
  t.teardown(() => w.stop());
  const res = await fetch(new URL('/healthz', w.rt.url));
  t.equal(res.status, 500);
  await res.body?.cancel();
  const e = await eventually('config.invalid', () => events(w).find((x) => x.event === 'config.invalid'));
  t.match(e, { error: 'LOG_LEVEL: must be info or debug, not "verbose"' });
});

t.test('an envelope address with a control is refused 5xx, and no control reaches the log raw', async (t) => {
  const w = await startTestWorker({});
  t.teardown(() => w.stop());
  const body = Buffer.from('Subject: c\r\n\r\nx\r\n');
  // eslint-disable-next-line no-control-regex
  const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
  for (const c of ['\x9b', '\x85', '\u2028', '\u2029']) {
    const to = await w.post('s@sender.test', `al${c}31mice@example.test`, body);
    t.equal(to.status, 550, `recipient with U+${c.charCodeAt(0).toString(16)}: refused`);
    t.equal(to.body.reason, '5.1.3 Invalid envelope recipient address: control character');
    const from = await w.post(`s${c}@sender.test`, 'alice@example.test', body);
    t.equal(from.body.reason, '5.1.7 Invalid envelope sender address: control character');
  }
  const said = await eventually('the rejections logged', () => {
    const r = events(w).filter((e) => e.event === 'email.rejected');
    return r.length >= 8 ? r : undefined;
  });
  t.ok(said.some((e) => e.to === 'al\x9b31mice@example.test'), 'the log keeps the address, escaped');
  for (const l of w.logs) t.notMatch(l, CONTROL, `no raw control in ${JSON.stringify(l)}`);
});
