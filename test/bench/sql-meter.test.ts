// bench:rows's figures (rows read and written per message, against the Free plan's daily
// allowances) come from bench/lib/sql-meter.ts wrapped around the real object in real workerd
// (bench/worker/metered-worker.ts). This proves the meter counts, so that the figures cannot
// silently read 0: a message's first INSERT into the indexed messages table counts its row and
// an entry per index, setAlarm is a row, and a meter with nothing run since it was read reports 0.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { METERED_ENTRY, takeMeter } from '../../bench/lib/metered.ts';
import { statementKey, totals, type MeterReport } from '../../bench/lib/sql-meter.ts';
import { startWorkerRuntime } from '../../local/worker-runtime.ts';
import { cloudflareBlock } from '../../local/email-routing.ts';

const DEV = 'dev-token-0123456789abcdef';

t.test('statementKey: one line, a long select list shortened, other statements whole', async (t) => {
  t.equal(statementKey('INSERT INTO t (a)\n   VALUES (?)'), 'INSERT INTO t (a) VALUES (?)');
  t.equal(statementKey(`SELECT ${'col_'.repeat(20)}x FROM messages WHERE id = ?`), 'SELECT … FROM messages WHERE id = ?');
  t.equal(statementKey('SELECT COALESCE((SELECT id FROM messages LIMIT 1), 1) AS id'), 'SELECT COALESCE((SELECT id FROM messages LIMIT 1), 1) AS id');
});

t.test('the metered object counts rows as workerd does: index entries, setAlarm; 0 when nothing ran', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-meter-'));
  const rt = await startWorkerRuntime({
    entry: METERED_ENTRY, persistDir: dir, agentTokens: ['agent-token-0123456789abcdef'], devIngressToken: DEV, verdictWaitMs: 0,
  });
  t.teardown(async () => { await rt.dispose(); await rm(dir, { recursive: true, force: true }); });
  const take = (): Promise<MeterReport> => takeMeter(rt);

  const started = await take();
  t.ok((started.kinds.start?.rowsWritten ?? 0) > 0, 'a new object\'s migrations write rows, counted as its start');
  t.same(await take(), { kinds: {}, statements: {} }, 'read again with nothing run since: 0');

  const from = 'sender@example.net';
  const to = 'alice@example.test';
  const body = Buffer.concat([cloudflareBlock(from, to), Buffer.from('Subject: meter\r\n\r\nhello\r\n')]);
  const url = new URL(`/dev/email?from=${from}&to=${to}`, rt.url);
  const res = await fetch(url, { method: 'POST', body, headers: { Authorization: `Bearer ${DEV}` } });
  t.equal(res.status, 200, await res.text());

  const r = await take();
  const ingest = r.kinds.ingest;
  t.equal(ingest?.invocations, 1, 'one ingest RPC');
  // Its row in `messages`, the primary key's index and messages_by_state; an incoming row has no
  // entry in the partial indexes (schema 12: no dedupe or body key yet, not queued or deferred).
  const insert = r.statements["INSERT INTO messages (id, state, sender, recipients, received_at) VALUES (?, 'incoming', ?, ?, ?)"]?.ingest;
  t.equal(insert?.calls, 1, 'the INSERT counted once, though its cursor was never read');
  t.equal(insert?.rowsWritten, 3, 'the INSERT wrote its row and an entry in each of 2 indexes');
  t.equal(r.statements['storage.setAlarm()']?.ingest?.rowsWritten, 1, 'the first alarm set: one row written');
  t.ok((ingest?.rowsRead ?? 0) > 0, 'ingest read rows (the duplicate check)');
  t.ok(totals(r).rowsWritten >= (insert?.rowsWritten ?? 0) + 1, 'the totals hold what the statements counted');
});
