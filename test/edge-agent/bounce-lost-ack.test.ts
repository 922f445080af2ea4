// The soak's double outcome (seed 11912): a message delivered into the real Dovecot, its ack
// lost with the connection (the agent killed after sending it into a muted proxy), then given
// up by the real object without a refusal: `attempts` (MAX_UNSETTLED_LEASES) or `expired`
// (MAX_AGE_MS, while no agent was there). The next agent gets the bounce task, finds the
// message in its journal and answers `bounced delivered`: no DSN at the bounce relay, the
// object settles it as acked, Dovecot holds one copy.
import t from 'tap';
import { join } from 'node:path';
import { startDovecot } from '../../bench/lib/dovecot.ts';
import { dovecotSkip } from '../helpers/skip.ts';
import { drained, waitFor } from '../helpers/mail.ts';
import { startSmtpSink } from '../helpers/smtp-sink.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';
import { runAgent } from './agent-process.ts';
import { startTcpProxy } from './tcp-proxy.ts';

const skip = dovecotSkip();

const CASES = {
  attempts: { MAX_UNSETTLED_LEASES: '1' },
  expired: { MAX_AGE_MS: '3000', RETRY_FIRST_MS: '1000', RETRY_MAX_MS: '1000' },
} as const;

for (const [reason, vars] of Object.entries(CASES)) {
  t.test(`delivered, ack lost, given up (${reason}): no DSN, settled as delivered, one copy`, { skip }, async (t) => {
    const dovecot = await startDovecot();
    t.teardown(() => dovecot.stop());
    const sink = await startSmtpSink();
    t.teardown(() => sink.close());
    const worker = await startTestWorker({ verdictWaitMs: 0, vars: { ...vars } });
    t.teardown(() => worker.stop());
    const proxy = await startTcpProxy(Number(worker.rt.url.port));
    t.teardown(() => proxy.close());
    const dir = t.testdir({ token: AGENT_TOKEN });
    const env = {
      MAILBRIDGE_TOKEN_FILE: join(dir, 'token'), MAILBRIDGE_TARGET: `lmtp+unix:${dovecot.lmtpSocket}`,
      MAILBRIDGE_STATE_DIR: join(dir, 'state'), MAILBRIDGE_NAME: 'dell', MAILBRIDGE_HTTP: 'off',
      MAILBRIDGE_WORKER_URL: `ws://127.0.0.1:${proxy.port}/agent`,
      MAILBRIDGE_BOUNCE_RELAY: sink.url, MAILBRIDGE_REPORTING_MTA: 'home.example.test',
    };

    const first = runAgent(env);
    t.teardown(() => { first.child.kill('SIGKILL'); });
    await first.waitEvent('session.ready');
    proxy.muteClient();  // nothing the agent sends reaches the object from now on: the ack will be lost
    const posted = await worker.post('s@example.net', 'alice@example.test', Buffer.from('Subject: lost ack\r\n\r\nhello\r\n'));
    const id = String(posted.body.id);
    t.match(await first.waitEvent('deliver.acked'), { outcome: 'acked', results: ['delivered:250'] }, 'delivered, the ack sent into the void');
    first.child.kill('SIGKILL');
    await first.exit;
    // The object gives the message up and owes its sender a bounce.
    const failed = (l: string): boolean => l.includes('"message.failed"') && l.includes(id) && l.includes(`"reason":"${reason}"`);
    await waitFor(`message.failed ${reason}`, () => Promise.resolve(worker.logs.some(failed) ? [1] : []), 1, 20_000);

    const second = runAgent(env);
    t.teardown(() => { second.child.kill('SIGKILL'); });
    const found = await second.waitEvent('bounce.delivered', (e) => e.id === id, 20_000);
    t.match(found, { id, reason, delivered: ['alice@example.test'] });
    t.match(await second.waitEvent('delivery.sent', (e) => e.id === id), { relay: 'journal', to: 'alice@example.test', note: /found in the journal when the bounce task came/ });
    await drained(() => worker.summary(), 10_000);
    t.ok(worker.logs.some((l) => l.includes('"message.acked"') && l.includes(id) && l.includes('"foundAt":"bounce"')), 'the object settled it as delivered');
    t.notOk(worker.logs.some((l) => l.includes('"bounce.sent"') && l.includes(id)), 'no bounce.sent at the object');
    t.equal(sink.messages.length, 0, 'no DSN at the bounce relay');
    t.equal((await dovecot.readMessages('alice')).length, 1, 'exactly one copy in the mailbox');
    second.child.kill('SIGTERM');
    await second.exit;
  });
}
