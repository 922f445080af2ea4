// What the agent tells its operator: /metrics counts what happened, /healthz is
// 200 only with a session and an answering LMTP target (else 503 and why), and
// each delivery's log line carries the Subject only when logSubject is on.
import t, { type Test } from 'tap';
import { startHttpServer } from '../../edge-agent/ops/http.ts';
import { shiftJisMessage } from '../helpers/mail.ts';
import { inProcess, metric, poll } from './in-process.ts';
import { header, msgId, push } from './scripted-object.ts';
import type { Agent } from '../../edge-agent/agent.ts';

async function serve(t: Test, a: Agent) {
  const http = await startHttpServer({ host: '127.0.0.1', port: 0 }, { health: () => a.health(), metrics: () => a.metrics.render() }, () => {});
  t.teardown(() => http.close());
  const get = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${http.port}${path}`);
    return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
  };
  return { get };
}

const body = Buffer.from('Subject: metrics\r\n\r\ncount me\r\n', 'latin1');

t.test('/metrics reflects what happened: delivered, corrupt, answered from the journal', async (t) => {
  const { object, agent } = await inProcess(t);
  const conn = object.connection();
  const a = agent();
  const c = await conn;
  const { get } = await serve(t, a);

  const h = header(msgId(1), body, ['alice@example.test', 'bob@example.test']);
  push(c, h, body);
  await c.next('ack');
  push(c, header(msgId(2), body, ['alice@example.test'], 1, 'f'.repeat(64)), body);
  await c.next('nack');
  push(c, { ...h, attempt: 2 }, body);  // a redelivery after a lost ack
  await c.next('ack');

  const m = await get('/metrics');
  t.equal(m.status, 200);
  t.match(m.type, /^text\/plain; version=0\.0\.4/);
  const v = (s: string) => metric(m.text, s);
  t.equal(v('mailbridge_agent_messages_total{outcome="acked"}'), 1);
  t.equal(v('mailbridge_agent_messages_total{outcome="corrupt"}'), 1);
  t.equal(v('mailbridge_agent_messages_total{outcome="journal"}'), 1);
  t.equal(v('mailbridge_agent_messages_total{outcome="shutdown"}'), 0, 'every outcome is exported, even at 0');
  t.equal(v('mailbridge_agent_recipients_total{outcome="delivered"}'), 2);
  t.equal(v('mailbridge_agent_delivered_bytes_total'), body.byteLength);
  t.equal(v('mailbridge_agent_delivery_duration_seconds_count'), 1);
  t.equal(v('mailbridge_agent_delivery_duration_seconds_bucket{le="+Inf"}'), 1);
  t.equal(v('mailbridge_agent_sessions_total'), 1);
  t.equal(v('mailbridge_agent_reconnects_total'), 0);
  t.equal(v('mailbridge_agent_in_flight'), 0);
  t.equal(v('mailbridge_agent_journal_entries'), 2, 'one entry per recipient');
  t.equal(v('mailbridge_agent_session_up'), 1);
  t.match(m.text, /# TYPE mailbridge_agent_delivery_duration_seconds histogram/);
  t.equal((await get('/elsewhere')).status, 404);
});

t.test('/healthz: 200 with a session and an answering target; 503 with the reason when either is gone', async (t) => {
  const { object, agent, peer } = await inProcess(t);
  const conn = object.connection();
  const a = agent({ maxReconnectMs: 300 }, { probeEveryMs: 100 });
  await conn;
  const { get } = await serve(t, a);
  const health = async () => {
    const r = await get('/healthz');
    return { status: r.status, body: JSON.parse(r.text) as { ok: boolean; reasons: string[] } };
  };
  const settle = (status: number) => poll(`/healthz ${status}`, health, (h) => h.status === status);

  t.match(await settle(200), { status: 200, body: { ok: true, reasons: [] } });
  t.ok(peer.hellos >= 1, 'the target was probed with LHLO');

  object.refuse = true;  // the object unreachable: the session drops and cannot come back
  t.match(await settle(503), { body: { ok: false, reasons: [/no WebSocket session/] } });
  object.refuse = false;
  t.match(await settle(200), { body: { ok: true } }, 'healthy again once reconnected');

  await peer.close();  // Dovecot gone: the next probe fails (refused, or cut if one was under way)
  const down = await settle(503);
  t.match(down.body.reasons, [new RegExp(`^LMTP target not answering \\(${peer.url.replace(/[.]/g, '\\.')}: `)]);
  t.equal(metric(a.metrics.render(), 'mailbridge_agent_target_up'), 0);
});

t.test('the Subject is logged only with logSubject on, decoded; the bytes delivered are unchanged', async (t) => {
  const raw = shiftJisMessage('subject-1');
  for (const logSubject of [false, true]) {
    await t.test(`logSubject ${logSubject}`, async (t) => {
      const { object, agent, named, peer } = await inProcess(t);
      const conn = object.connection();
      agent({}, { logSubject });
      const c = await conn;
      push(c, header(msgId(3), raw, ['alice@example.test']), raw, 100);
      await c.next('ack');
      const [line] = named('deliver.acked');
      t.match(line, { id: msgId(3), recipients: 1, outcome: 'acked', bytes: raw.byteLength, ms: Number });
      if (logSubject) t.equal(line?.subject, '日本語', 'RFC 2047 decoded by mailparser');
      else t.notOk(line && 'subject' in line, 'no subject field');
      t.ok(peer.stored[0]?.subarray(-raw.byteLength).equals(raw), 'byte for byte');
    });
  }
});
