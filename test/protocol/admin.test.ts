// The admin API's contract (protocol/admin.ts): what the Worker writes parses back whole; a
// field a Worker older than it leaves out reads as null; a field with the wrong shape is named.
import t from 'tap';
import { AdminShapeError, parseMessageDetail, parseQueueSummary, parseReplayAnswer, type QueueSummary } from '../../protocol/admin.ts';
import { STATES, type State } from '../../protocol/queue.ts';

const each = <T>(v: T): Record<State, T> => Object.fromEntries(STATES.map((s) => [s, v])) as Record<State, T>;
const summary: QueueSummary = {
  states: each(1), agents: [{ agent: 'home', session: 's1', shard: 0 }], oldest: 5, oldestByState: each<number | null>(null),
  bouncesSent: 2, stored: each({ bodies: 1, bytes: 10, r2Bytes: 4 }), shards: 1,
  storage: { objectBytes: 1, objectLimitBytes: 5e9, r2Bytes: 4, r2LimitBytes: 1e10, warnPercent: 80 },
};

t.test('a summary as the Worker writes it parses back whole', async (t) => {
  const read = parseQueueSummary(JSON.parse(JSON.stringify(summary)));
  t.same(read, { ...summary, agents: [{ agent: 'home', session: 's1' }] });
});

t.test('an older Worker\'s summary: what it leaves out is null, not an error', async (t) => {
  const read = parseQueueSummary({ states: each(0), agents: [], oldest: null });
  t.same([read.oldestByState, read.bouncesSent, read.stored, read.storage, read.shards], [null, null, null, null, null]);
});

t.test('a field with the wrong shape is named', async (t) => {
  t.throws(() => parseQueueSummary({ states: {}, agents: [] }), new AdminShapeError('body.states.incoming: not a whole number'));
  t.throws(() => parseQueueSummary({ ...summary, stored: { ...summary.stored, hold: { bodies: 1, bytes: -1, r2Bytes: 0 } } }),
    new AdminShapeError('body.stored.hold.bytes: not a whole number'));
  t.throws(() => parseQueueSummary({ ...summary, agents: [{ agent: 1 }] }), new AdminShapeError('body.agents[0].agent: not a string'));
  t.throws(() => parseMessageDetail({ headers: [] }), AdminShapeError);
});

t.test('the replay answer: the new id, from the one asked about', async (t) => {
  const id = 'a'.repeat(32);
  const as = 'b'.repeat(32);
  t.equal(parseReplayAnswer({ id: as, replayedFrom: id, state: 'queued' }, id), as);
  t.equal(parseReplayAnswer({ id, state: 'queued' }, id), id, 'a Worker before issue #22 keeps the id');
  t.throws(() => parseReplayAnswer({ id: as, replayedFrom: as, state: 'queued' }, id), AdminShapeError);
});
