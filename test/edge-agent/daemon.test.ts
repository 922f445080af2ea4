// The agent as a process, the way systemd runs it: configured from the
// environment alone (no config file), connected to the real Worker in workerd,
// stopped with SIGTERM.
import t, { type Test } from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cloudflareBlock } from '../../local/email-routing.ts';
import { startMaildirTarget } from '../../local/maildir-target.ts';
import { defaultReportingMta } from '../../edge-agent/agent-config.ts';
import { drained, isStoredExactly, maildirNew, shiftJisMessage, splitTrace, waitFor } from '../helpers/mail.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';
import { runAgent } from './agent-process.ts';
import { metric, poll } from './in-process.ts';

const run = (env: Record<string, string>) => runAgent(env);

/** A real Worker, a temp dir and an embedded Maildir target, all gone after the test. */
async function setup(t: Test) {
  const worker = await startTestWorker();
  t.teardown(() => worker.stop());
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-daemon-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const target = await startMaildirTarget({ root: join(dir, 'maildir') });
  t.teardown(() => target.close());
  return { worker, dir, target };
}

t.test('bad configuration: exit code 2 and a message naming the variable', async (t) => {
  const base = { MAILBRIDGE_WORKER_URL: 'wss://relay.example.workers.dev/agent', MAILBRIDGE_TOKEN: AGENT_TOKEN };
  const cases: [Record<string, string>, RegExp][] = [
    [{ MAILBRIDGE_TOKEN: AGENT_TOKEN }, /MAILBRIDGE_WORKER_URL must be set/],
    [{ ...base, MAILBRIDGE_WORKER_URL: 'https://relay.example/agent' }, /MAILBRIDGE_WORKER_URL: must start with wss:\/\//],
    [{ ...base, MAILBRIDGE_TOKEN: 'short' }, /MAILBRIDGE_TOKEN: must be at least 16/],
    [{ ...base, MAILBRIDGE_TARGET: 'http://dovecot' }, /MAILBRIDGE_TARGET: invalid target "http:\/\/dovecot"/],
    [{ ...base, MAILBRIDGE_CONCURRENCY: 'lots' }, /MAILBRIDGE_CONCURRENCY: not a whole number/],
    [{ ...base, MAILBRIDGE_CONCURRENCY: '0' }, /MAILBRIDGE_CONCURRENCY: must be an integer from 1 to 64/],
    [{ MAILBRIDGE_WORKER_URL: base.MAILBRIDGE_WORKER_URL, MAILBRIDGE_TOKEN_FILE: '/nonexistent/token' }, /MAILBRIDGE_TOKEN_FILE: cannot read/],
  ];
  for (const [env, message] of cases) {
    const p = run(env);
    t.equal(await p.exit, 2, `exit 2 for ${JSON.stringify(env)}`);
    t.match(p.err(), message);
  }
});

t.test('delivers from the real Worker, then stops on SIGTERM with exit 0', async (t) => {
  const { worker, dir, target } = await setup(t);
  await writeFile(join(dir, 'token'), `${AGENT_TOKEN}\n`, { mode: 0o600 });

  const p = run({
    MAILBRIDGE_WORKER_URL: worker.agentUrl(), MAILBRIDGE_TOKEN_FILE: join(dir, 'token'),
    MAILBRIDGE_TARGET: target.url, MAILBRIDGE_STATE_DIR: join(dir, 'state'), MAILBRIDGE_NAME: 'dell',
    MAILBRIDGE_HTTP: '127.0.0.1:0',
  });
  t.teardown(() => { p.child.kill('SIGKILL'); });
  // The bytes as Email Routing hands them over (its block, then the sender's): all of them stored.
  const raw = Buffer.concat([cloudflareBlock('s@example.net', 'alice@example.test'), shiftJisMessage('daemon-1')]);
  const before = Date.now();
  const posted = await worker.post('s@example.net', 'alice@example.test', raw, { block: false });
  const after = Date.now();
  t.equal(posted.status, 200);
  const [stored] = await waitFor('delivered message', () => maildirNew(join(target.root, 'alice@example.test')), 1);
  const parts = splitTrace(stored ?? Buffer.alloc(0));
  t.equal(parts?.agent, 'dell', 'MAILBRIDGE_NAME is in the trace header');
  t.ok(isStoredExactly(stored, { agent: 'dell', id: String(posted.body.id), authservId: defaultReportingMta(), at: [before, after] }, raw), 'byte-exact: our two headers, then the message');
  await waitFor('ack', async () => (p.out().includes('"deliver.acked"') ? [1] : []), 1);

  p.child.kill('SIGTERM');
  t.equal(await p.exit, 0, 'exit 0 after SIGTERM');
  const events = p.out().trim().split('\n').map((l) => (JSON.parse(l) as { event: string }).event);
  t.same(events.filter((e) => e.startsWith('agent.')), ['agent.started', 'agent.stopping', 'agent.stopped']);
  t.equal(p.err(), '', 'nothing on stderr');
});

t.test('reconnects after the Worker restarts; /healthz and /metrics tell what happened', async (t) => {
  const { worker, dir, target } = await setup(t);
  const p = runAgent({
    MAILBRIDGE_WORKER_URL: worker.agentUrl(), MAILBRIDGE_TOKEN: AGENT_TOKEN, MAILBRIDGE_TARGET: target.url,
    MAILBRIDGE_STATE_DIR: join(dir, 'state'), MAILBRIDGE_HTTP: '127.0.0.1:0', MAILBRIDGE_MAX_RECONNECT_MS: '1000',
  });
  t.teardown(() => { p.child.kill('SIGKILL'); });
  const { port } = await p.waitEvent('http.listening');
  const get = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${String(port)}${path}`);
    return { status: res.status, text: await res.text() };
  };
  await poll('/healthz 200', () => get('/healthz'), (r) => r.status === 200);
  const box = join(target.root, 'alice@example.test');

  t.equal((await worker.post('s@example.net', 'alice@example.test', shiftJisMessage('restart-1'))).status, 200);
  await waitFor('first message', () => maildirNew(box), 1);
  await worker.rt.restart();  // same storage, same port: the edge came back
  await p.waitEvent('session.closed');
  await p.waitEvent('session.ready', () => p.events().filter((e) => e.event === 'session.ready').length === 2);
  t.equal((await worker.post('s@example.net', 'alice@example.test', shiftJisMessage('restart-2'))).status, 200);
  await waitFor('second message', () => maildirNew(box), 2);
  await drained(() => worker.summary());
  t.equal((await maildirNew(box)).length, 2, 'each once');

  t.match(await get('/healthz'), { status: 200, text: /"ok":true/ });
  const m = (await get('/metrics')).text;
  t.equal(metric(m, 'mailbridge_agent_sessions_total'), 2);
  t.equal(metric(m, 'mailbridge_agent_reconnects_total'), 1);
  t.equal(metric(m, 'mailbridge_agent_messages_total{outcome="acked"}'), 2);
  t.equal(metric(m, 'mailbridge_agent_recipients_total{outcome="delivered"}'), 2);
  p.child.kill('SIGTERM');
  t.equal(await p.exit, 0);
});

t.test('the bundle (dist/edge-agent.mjs, as the bench and the soak run it) delivers, logs a Subject, reclaims', async (t) => {
  const { AGENT_BUNDLE, AGENT_NODE_FLAGS, buildAgent } = await import('../../edge-agent/package/build.ts');
  const file = await buildAgent();
  t.equal(file, AGENT_BUNDLE);

  const { worker, dir, target } = await setup(t);
  const p = runAgent({
    MAILBRIDGE_WORKER_URL: worker.agentUrl(), MAILBRIDGE_TOKEN: AGENT_TOKEN, MAILBRIDGE_TARGET: target.url,
    MAILBRIDGE_STATE_DIR: join(dir, 'state'), MAILBRIDGE_NAME: 'dell', MAILBRIDGE_HTTP: '127.0.0.1:0',
    // mailparser is left out of the bundle and loaded from node_modules on first use.
    MAILBRIDGE_LOG_SUBJECT: 'true',
  }, [], { file, nodeFlags: AGENT_NODE_FLAGS });
  t.teardown(() => { p.child.kill('SIGKILL'); });
  const started = await p.waitEvent('agent.started');
  t.equal(started.reclaim, true, 'garbage is reclaimed as messages pass (--expose-gc)');
  // The bytes as Email Routing hands them over (its block, then the sender's): all of them stored.
  const raw = Buffer.concat([cloudflareBlock('s@example.net', 'alice@example.test'), shiftJisMessage('bundle-1')]);
  const before = Date.now();
  const posted = await worker.post('s@example.net', 'alice@example.test', raw, { block: false });
  const after = Date.now();
  t.equal(posted.status, 200);
  const [stored] = await waitFor('delivered message', () => maildirNew(join(target.root, 'alice@example.test')), 1);
  t.ok(isStoredExactly(stored, { agent: 'dell', id: String(posted.body.id), authservId: defaultReportingMta(), at: [before, after] }, raw), 'byte-exact: our two headers, then the message');
  const acked = await p.waitEvent('deliver.acked');
  t.equal(acked.subject, '日本語', 'the Subject, decoded by mailparser loaded from node_modules');
  p.child.kill('SIGTERM');
  t.equal(await p.exit, 0);
  t.equal(p.err(), '', 'nothing on stderr');
});
