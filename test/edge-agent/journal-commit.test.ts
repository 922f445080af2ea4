// The journal's group commit: what is added in one event-loop turn is committed in one
// transaction, is visible to a second connection once add() resolves, and is never
// silently dropped (a failed commit rejects; close() commits what is queued).
import t, { type Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Journal } from '../../edge-agent/delivery/journal.ts';
import type { RecipientResult } from '../../protocol/wire.ts';

const ok = (recipient: string): RecipientResult => ({ recipient, code: 250, enhanced: '2.0.0', text: 'Saved', outcome: 'delivered' });

async function open(t: Test): Promise<{ journal: Journal; dir: string; reader: DatabaseSync }> {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-journal-'));
  const journal = new Journal(dir);
  const reader = new DatabaseSync(join(dir, 'journal.sqlite'));
  t.teardown(async () => {
    reader.close();
    try { journal.close(); } catch { /* closed by the test */ }
    await rm(dir, { recursive: true, force: true });
  });
  return { journal, dir, reader };
}

const count = (db: DatabaseSync): number => Number(db.prepare('SELECT COUNT(*) AS n FROM results').get()?.n);

t.test('adds of one turn share one commit; durable and visible to another connection when add() resolves', async (t) => {
  const { journal, reader } = await open(t);
  const adds = Array.from({ length: 8 }, (_, i) => journal.add(`m${i}`, [ok('a@x.test'), ok('b@x.test')]));
  t.equal(count(reader), 0, 'nothing committed within the turn');
  t.same([...journal.lookup('m3', ['a@x.test', 'c@x.test']).keys()], ['a@x.test'], 'lookup sees queued entries');
  await Promise.all(adds);
  t.equal(journal.commits, 1, 'one transaction for the whole turn');
  t.equal(count(reader), 16, 'all 16 entries readable from a second connection');
  await journal.add('m9', [ok('a@x.test')]);
  t.equal(journal.commits, 2, 'a later turn, a new commit');
  t.same(journal.lookup('m9', ['a@x.test']).get('a@x.test'), ok('a@x.test'), 'read back from disk');
});

t.test('temporary failures are not journaled', async (t) => {
  const { journal, reader } = await open(t);
  await journal.add('m1', [{ ...ok('a@x.test'), code: 451, outcome: 'tempfail' }, { ...ok('b@x.test'), code: 550, outcome: 'permfail' }]);
  t.equal(count(reader), 1);
  t.same([...journal.lookup('m1', ['a@x.test', 'b@x.test']).keys()], ['b@x.test']);
});

t.test('a commit that fails rejects every add of its batch, and forgets the queued entries', async (t) => {
  const { journal, reader } = await open(t);
  reader.exec('BEGIN IMMEDIATE');  // another writer holds the lock: the journal's commit fails
  const adds = [journal.add('m1', [ok('a@x.test')]), journal.add('m2', [ok('a@x.test')])];
  const settled = await Promise.allSettled(adds);
  t.same(settled.map((s) => s.status), ['rejected', 'rejected']);
  t.match(String((settled[0] as PromiseRejectedResult).reason), /locked|busy/i);
  reader.exec('ROLLBACK');
  t.equal(journal.lookup('m1', ['a@x.test']).size, 0, 'not claimed as journaled');
  await journal.add('m3', [ok('a@x.test')]);
  t.equal(count(reader), 1, 'the next batch commits');
});

t.test('close() commits what is still queued', async (t) => {
  const { journal, reader } = await open(t);
  const added = journal.add('m1', [ok('a@x.test')]);
  journal.close();
  await added;
  t.equal(count(reader), 1);
  await t.rejects(journal.add('m2', [ok('a@x.test')]), /journal closed/);
});
