// kill -9 between Dovecot's 250 and the ack reaching the queue: the agent process
// talks to the real Worker through a TCP proxy that, once the session is up,
// swallows everything the agent sends. So the message is delivered into the real
// Dovecot and journaled, its ack is sent and lost, and then the process is
// killed. The restarted agent (same state dir) gets the redelivery and answers
// it from the journal: Dovecot holds exactly one copy.
import t from 'tap';
import { join } from 'node:path';
import { startDovecot } from '../../bench/lib/dovecot.ts';
import { dovecotSkip } from '../helpers/skip.ts';
import { drained, shiftJisMessage, splitTrace } from '../helpers/mail.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';
import { runAgent } from './agent-process.ts';
import { metric } from './in-process.ts';
import { startTcpProxy } from './tcp-proxy.ts';

const skip = dovecotSkip();

t.test('kill -9 after the delivery, before the ack: acked from the journal on restart, one copy in Dovecot', { skip }, async (t) => {
  const dovecot = await startDovecot();
  t.teardown(() => dovecot.stop());
  const worker = await startTestWorker();
  t.teardown(() => worker.stop());
  const proxy = await startTcpProxy(Number(worker.rt.url.port));
  t.teardown(() => proxy.close());
  const dir = t.testdir({ token: AGENT_TOKEN });
  const env = {
    MAILBRIDGE_TOKEN_FILE: join(dir, 'token'), MAILBRIDGE_TARGET: `lmtp+unix:${dovecot.lmtpSocket}`,
    MAILBRIDGE_STATE_DIR: join(dir, 'state'), MAILBRIDGE_NAME: 'dell', MAILBRIDGE_HTTP: '127.0.0.1:0',
    MAILBRIDGE_WORKER_URL: `ws://127.0.0.1:${proxy.port}/agent`,
  };

  const first = runAgent(env);
  t.teardown(() => { first.child.kill('SIGKILL'); });
  await first.waitEvent('session.ready');
  proxy.muteClient();  // from now on nothing the agent sends reaches the object: the ack will be lost
  const raw = shiftJisMessage('crash-1');
  t.equal((await worker.post('s@example.net', 'alice@example.test', raw)).status, 200);
  const acked = await first.waitEvent('deliver.acked');
  first.child.kill('SIGKILL');
  t.equal(await first.exit, null, 'killed by the signal');
  t.match(acked, { outcome: 'acked', attempt: 1, results: ['delivered:250'] }, 'delivered; its ack was sent into the void');
  t.equal((await dovecot.readMessages('alice')).length, 1, 'Dovecot stored it');
  t.same(worker.logs.filter((l) => l.includes('"message.acked"')), [], 'the object never saw the ack');

  const second = runAgent(env);
  t.teardown(() => { second.child.kill('SIGKILL'); });
  const journal = await second.waitEvent('deliver.journal');
  t.match(journal, { outcome: 'journal', attempt: 2, results: ['delivered:250'] }, 'the redelivery is answered from the journal');
  await drained(() => worker.summary(), 10_000);
  const stored = await dovecot.readMessages('alice');
  t.equal(stored.length, 1, 'exactly one copy');
  const at = stored[0]?.indexOf('Received: from cloudflare-email-routing') ?? -1;
  t.ok(splitTrace(stored[0]?.subarray(at) ?? Buffer.alloc(0))?.rest.equals(raw), 'byte for byte');

  // What the second agent's /metrics says happened.
  const { port } = await second.waitEvent('http.listening');
  const text = await (await fetch(`http://127.0.0.1:${String(port)}/metrics`)).text();
  t.equal(metric(text, 'mailbridge_agent_messages_total{outcome="journal"}'), 1);
  t.equal(metric(text, 'mailbridge_agent_messages_total{outcome="acked"}'), 0, 'no second LMTP delivery');
  t.equal(metric(text, 'mailbridge_agent_journal_entries'), 1);

  second.child.kill('SIGTERM');
  t.equal(await second.exit, 0);
});
