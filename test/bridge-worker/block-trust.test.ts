// Below a Cloudflare block that carries no verdicts of its own (workerd#6740), a sender's
// `Authentication-Results: mx.cloudflare.net; …`, Received-SPF or X-CF-* is the sender's, in
// real workerd: it fills no verdict of the message frame, and it is part of the dedupe key
// (two messages that differ only there are two messages; the same one resent is one).
import t from 'tap';
import { NO_VERDICTS, PROTOCOL_VERSION, type MessageFrame } from '../../protocol/wire.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';

const SENDER = 'From: <alerts@bank.example>\r\nMessage-ID: <trust-1@bank.example>\r\nSubject: x\r\n\r\nhello\r\n';
const own = (dmarc: string): Buffer => Buffer.from(
  `Authentication-Results: mx.cloudflare.net; dkim=pass; dmarc=${dmarc} header.from=bank.example; spf=pass; arc=pass\r\n` +
  `Received-SPF: ${dmarc} (mx.cloudflare.net: domain of alerts@bank.example designates 192.0.2.9 as permitted sender)\r\n` +
  `X-CF-Spamh-Score: ${dmarc.length}\r\n` + SENDER, 'latin1');

t.test('a sender\'s fields under Cloudflare\'s names below a verdict-less block: no verdict, in the dedupe key', async (t) => {
  const w = await startTestWorker({ verdictWaitMs: 0 });
  t.teardown(() => w.stop());
  const post = (raw: Buffer) => w.post('alerts@bank.example', 'alice@example.test', raw, { block: { noVerdicts: true } });
  const a = await post(own('pass'));
  const b = await post(own('fail'));
  const again = await post(own('pass'));
  t.match(a, { status: 200, body: { duplicate: false } });
  t.match(b, { status: 200, body: { duplicate: false } }, 'differing only in the sender\'s fields: another message');
  t.not(b.body.id, a.body.id);
  t.match(again, { status: 200, body: { id: a.body.id, duplicate: true } }, 'the same message under a fresh block: a duplicate');
  const agent = new RawAgent(w.agentUrl(), AGENT_TOKEN);
  await agent.opened;
  t.teardown(() => agent.close());
  agent.send({ type: 'hello', v: PROTOCOL_VERSION, agent: 'trust', window: 4, credit: 8 << 20, fetch: true });
  const frames = await agent.until((s) => {
    const m = s.flatMap((x) => (x.kind === 'frame' && x.frame.type === 'message' ? [x.frame] : []));
    return m.length >= 2 ? m : undefined;
  }) as MessageFrame[];
  for (const f of frames) t.same(f.auth ?? NO_VERDICTS, NO_VERDICTS, `${f.id}: no verdict from the sender's fields`);
});
