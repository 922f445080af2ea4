// The soak's accounting fed made-up evidence: one case per way mail can go wrong (lost, a
// duplicate with no window, a duplicate that its window cannot explain, a bounce sent twice, a
// bounce to <>), each of which must be caught, and the legitimate ends (a window that explains
// one copy, the operator's delete, a hold) that must not be. The evidence is built as the soak
// reads it: stored copies with the agent's trace header and the stand-in's Cloudflare block,
// DSNs by the agent's own builder, agent log lines as the agent writes them.
import t from 'tap';
import { buildDsn } from '../../edge-agent/bounce/dsn.ts';
import { authResultsHeader, traceHeader } from '../../edge-agent/delivery/trace.ts';
import { cloudflareBlock } from '../../local/email-routing.ts';
import { MAY_BE_DELIVERED } from '../../lmtp-proxy/client.ts';
import type { MessageFrame } from '../../protocol/wire.ts';
import type { Sunk } from '../helpers/smtp-sink.ts';
import { account, type AgentLife, type Books, type Evidence, type Sent } from './account.ts';
import { makeMessage } from './mail.ts';

const SEED = 5;
const KNOWN_USER = 'alice@example.test';
const qidOf = (i: number): string => i.toString(16).padStart(32, '0');

/** Message `index` (from a real sender, not <>), accepted for alice alone, queue id qidOf(index). */
function sent(index: number, sender?: string): Sent {
  const m = makeMessage(index, SEED, 2048);
  const msg = { ...m, recipients: [KNOWN_USER], sender: sender ?? `soak-${index}@example.net` };
  return { msg, accepted: true, ids: new Map([[KNOWN_USER, qidOf(index)]]), refusedAtSmtp: new Set() };
}

/** One copy in alice's Maildir, as the agent stores it. */
function copy(x: Sent): { user: string; bytes: Buffer } {
  const frame = { type: 'message', id: qidOf(x.msg.index), attempt: 1, sender: x.msg.sender, recipients: [KNOWN_USER], size: 0, receivedAt: 0 } as MessageFrame;
  const bytes = Buffer.concat([traceHeader('soak', frame), authResultsHeader('soak.example.test', frame), cloudflareBlock(x.msg.sender, KNOWN_USER), x.msg.raw]);
  return { user: KNOWN_USER, bytes };
}

/** One DSN for `x` at the bounce relay, as the agent builds it; `to`: its envelope recipient; `id`: the copy's queue id. */
function dsn(x: Sent, at: number, to = x.msg.sender, id = qidOf(x.msg.index)): Sunk {
  const body = buildDsn({
    reportingMta: 'soak.example.test', to: to === '' ? 'nobody@example.net' : to, arrivalDate: 0, id, reason: 'refused',
    results: [{ recipient: KNOWN_USER, code: 550, enhanced: '5.1.1', text: '5.1.1 no such user', outcome: 'permfail' }],
    headers: x.msg.raw.subarray(0, x.msg.raw.indexOf('\r\n\r\n') + 4), now: at,
  });
  return { from: '', to: [to], body: Buffer.from(body), at };
}

/** An agent log line for one settled attempt. */
function attempt(x: Sent, n: number, at: number, notes: { recipient: string; text: string }[] = []): string {
  return JSON.stringify({ ts: new Date(at).toISOString(), event: 'deliver.acked', id: qidOf(x.msg.index), attempt: n, ...(notes.length > 0 ? { notes } : {}) });
}

const T0 = Date.parse('2026-12-06T12:00:00Z');
const ALIVE: AgentLife[] = [{ start: T0 - 60_000, end: Infinity, killed: false }];
/** The agent killed -9 at T0 + 5 s, restarted at T0 + 6 s. */
const KILLED: AgentLife[] = [{ start: T0 - 60_000, end: T0 + 5_000, killed: true }, { start: T0 + 6_000, end: Infinity, killed: false }];

async function books(e: Partial<Evidence> & { sent: Sent[] }): Promise<Books> {
  return account({ seed: SEED, stored: [], dsns: [], agentLog: '', lives: ALIVE, lookup: () => Promise.resolve(null), ...e });
}

t.test('one copy, logged once: delivered, nothing else', async (t) => {
  const x = sent(1);
  const b = await books({ sent: [x], stored: [copy(x)], agentLog: attempt(x, 1, T0) });
  t.match(b, { delivered: 1, lost: 0, duplicates: 0, explainedDuplicates: 0, badBounces: 0, strays: 0, byteMismatches: 0 });
});

t.test('a lost message: accepted, in no mailbox, no DSN, not in the queue', async (t) => {
  const x = sent(2);
  const b = await books({ sent: [x] });
  t.equal(b.lost, 1, 'lost');
  t.equal(b.delivered + b.bounced + b.deadLettered + b.deletedByOperator + b.held, 0, 'no other outcome');
  t.match(b.problems.join('\n'), /lost/);
});

t.test('a message the queue still owes (deferred) at the end is lost, not accounted', async (t) => {
  const x = sent(3);
  const b = await books({ sent: [x], lookup: () => Promise.resolve({ state: 'deferred', failure: null }) });
  t.equal(b.lost, 1);
});

t.test('a dead-letter from <> is an end; one from a sender who could be told is a finding', async (t) => {
  const dead = (): Promise<{ state: string; failure: string }> => Promise.resolve({ state: 'dead-letter', failure: 'attempts' });
  const fromNull = await books({ sent: [sent(21, '')], lookup: dead });
  t.match(fromNull, { deadLettered: 1, nullSenderDeadLettered: 1, givenUp: 0, lost: 0 });
  const fromSender = await books({ sent: [sent(22)], lookup: dead });
  t.match(fromSender, { deadLettered: 1, givenUp: 1 });
  t.match(fromSender.problems.join('\n'), /dead-lettered \(attempts\), its sender never told/);
});

t.test('a dead-letter with no failure recorded is no dead-letter', async (t) => {
  const x = sent(4);
  const b = await books({ sent: [x], lookup: () => Promise.resolve({ state: 'dead-letter', failure: null }) });
  t.equal(b.lost, 1);
  t.equal(b.deadLettered, 0);
});

t.test('a duplicate with no gap in its attempts, and no "may have been delivered", is unexplained', async (t) => {
  const x = sent(5);
  const b = await books({ sent: [x], stored: [copy(x), copy(x)], agentLog: [attempt(x, 1, T0), attempt(x, 2, T0 + 1000)].join('\n'), lives: KILLED });
  t.equal(b.delivered, 1);
  t.equal(b.duplicates, 1, 'unexplained');
  t.equal(b.explainedDuplicates, 0);
});

t.test('a gap in the attempts with no kill -9 around it explains nothing (its lease never reached LMTP)', async (t) => {
  const x = sent(6);
  const b = await books({ sent: [x], stored: [copy(x), copy(x)], agentLog: [attempt(x, 1, T0), attempt(x, 3, T0 + 9000)].join('\n'), lives: ALIVE });
  t.equal(b.duplicates, 1);
  t.equal(b.explainedDuplicates, 0);
});

t.test('a gap whose agent was killed -9 elsewhere in time explains nothing', async (t) => {
  const x = sent(7);
  // Attempts 1 and 3 both logged after the kill at T0 + 5 s: attempt 2 ran in the new process.
  const b = await books({ sent: [x], stored: [copy(x), copy(x)], agentLog: [attempt(x, 1, T0 + 7000), attempt(x, 3, T0 + 9000)].join('\n'), lives: KILLED });
  t.equal(b.duplicates, 1);
});

t.test('a gap around a kill -9 explains one copy', async (t) => {
  const x = sent(8);
  const b = await books({ sent: [x], stored: [copy(x), copy(x)], agentLog: [attempt(x, 1, T0), attempt(x, 3, T0 + 9000)].join('\n'), lives: KILLED });
  t.equal(b.duplicates, 0);
  t.equal(b.explainedDuplicates, 1);
});

t.test('a gap around a kill -9 cannot explain two extra copies', async (t) => {
  const x = sent(9);
  const b = await books({ sent: [x], stored: [copy(x), copy(x), copy(x)], agentLog: [attempt(x, 1, T0), attempt(x, 3, T0 + 9000)].join('\n'), lives: KILLED });
  t.equal(b.delivered, 1);
  t.equal(b.explainedDuplicates, 1, 'the one the gap can explain');
  t.equal(b.duplicates, 1, 'the other is unexplained');
});

t.test('a gap at attempt 1 (killed on its first attempt) explains one copy, not more', async (t) => {
  const x = sent(10);
  const b = await books({ sent: [x], stored: [copy(x), copy(x), copy(x)], agentLog: attempt(x, 2, T0 + 9000), lives: KILLED });
  t.equal(b.explainedDuplicates, 1);
  t.equal(b.duplicates, 1);
});

t.test('"may have been delivered" explains one copy per such result, for that recipient only', async (t) => {
  const x = sent(11);
  const note = [{ recipient: KNOWN_USER, text: `451 4.4.2 connection lost ${MAY_BE_DELIVERED}` }];
  const once = await books({ sent: [x], stored: [copy(x), copy(x), copy(x)], agentLog: [attempt(x, 1, T0, note), attempt(x, 2, T0 + 1000)].join('\n') });
  t.equal(once.explainedDuplicates, 1);
  t.equal(once.duplicates, 1);
  const other = [{ recipient: 'bob@example.test', text: `451 4.4.2 connection lost ${MAY_BE_DELIVERED}` }];
  const elsewhere = await books({ sent: [x], stored: [copy(x), copy(x)], agentLog: [attempt(x, 1, T0, other), attempt(x, 2, T0 + 1000)].join('\n') });
  t.equal(elsewhere.duplicates, 1, 'another recipient\'s window is not this one\'s');
});

t.test('a bounce sent twice, with no kill -9 between the relay and the journal, is unexplained', async (t) => {
  const x = sent(12);
  const b = await books({ sent: [x], dsns: [dsn(x, T0), dsn(x, T0 + 2000)] });
  t.equal(b.bounced, 1);
  t.equal(b.bounceDuplicates, 1);
  t.equal(b.explainedBounceDuplicates, 0);
  t.equal(b.badBounces, 0, 'each DSN itself is well-formed');
});

t.test('a bounce for a message from <> is caught (and one to <> too)', async (t) => {
  const x = sent(13, '');
  const b = await books({ sent: [x], dsns: [dsn(x, T0, '')] });
  t.ok(b.badBounces >= 1, `bad bounces: ${b.badBounces}`);
  t.match(b.problems.join('\n'), /DSN for a message from <>/);
});

t.test('a DSN to someone else than the envelope sender is caught', async (t) => {
  const x = sent(14);
  const b = await books({ sent: [x], dsns: [dsn(x, T0, 'someone-else@example.net')] });
  t.equal(b.badBounces, 1);
});

t.test('delivered and bounced: unexplained without a window for every copy', async (t) => {
  const x = sent(15);
  const plain = await books({ sent: [x], stored: [copy(x)], dsns: [dsn(x, T0 + 2000)], agentLog: attempt(x, 1, T0) });
  t.equal(plain.bounceDuplicates, 1);
  const note = [{ recipient: KNOWN_USER, text: `451 4.4.2 connection lost ${MAY_BE_DELIVERED}` }];
  const window = await books({ sent: [x], stored: [copy(x)], dsns: [dsn(x, T0 + 2000)], agentLog: attempt(x, 1, T0, note) });
  t.equal(window.bounceDuplicates, 0, 'the copy came through the window; the DSN was the known end');
  t.equal(window.explainedBounceDuplicates, 1);
  const two = await books({ sent: [x], stored: [copy(x), copy(x)], dsns: [dsn(x, T0 + 2000)], agentLog: attempt(x, 1, T0, note) });
  t.equal(two.bounceDuplicates + two.duplicates, 1, 'two copies and a DSN with one window: one of the three is unexplained');
});

t.test('the operator\'s delete and hold are ends of their own; a delete the operator never made is a loss', async (t) => {
  const [d, h, gone] = [sent(16), sent(17), sent(18)];
  const b = await books({
    sent: [d, h, gone], deletedByOperator: new Set([qidOf(16)]),
    lookup: (id) => Promise.resolve(id === qidOf(17) ? { state: 'hold', failure: null } : null),
  });
  t.equal(b.deletedByOperator, 1);
  t.equal(b.held, 1);
  t.equal(b.lost, 1);
});

t.test('a copy of a message the operator deleted is caught, unless a window stored it before', async (t) => {
  const x = sent(20);
  const deleted = new Set([qidOf(20)]);
  const plain = await books({ sent: [x], stored: [copy(x)], agentLog: attempt(x, 1, T0), deletedByOperator: deleted });
  t.equal(plain.deletedYetDelivered, 1);
  const note = [{ recipient: KNOWN_USER, text: `451 4.4.2 connection lost ${MAY_BE_DELIVERED}` }];
  const window = await books({ sent: [x], stored: [copy(x)], agentLog: attempt(x, 1, T0, note), deletedByOperator: deleted });
  t.equal(window.deletedYetDelivered, 0, 'stored by the attempt whose reply was lost, before the delete');
  t.equal(window.delivered, 1);
  const cut = JSON.stringify({ ts: new Date(T0).toISOString(), event: 'deliver.disconnected', id: qidOf(20), attempt: 1, outcome: 'disconnected', results: ['delivered:250'] });
  const unheard = await books({ sent: [x], stored: [copy(x)], agentLog: cut, deletedByOperator: deleted });
  t.equal(unheard.deletedYetDelivered, 0, 'delivered by an attempt whose ack went down with its connection');
});

t.test('a copy that is not what was sent is a byte mismatch', async (t) => {
  const x = sent(19);
  const c = copy(x);
  c.bytes.writeUInt8(c.bytes.readUInt8(c.bytes.length - 3) ^ 0x01, c.bytes.length - 3);
  const b = await books({ sent: [x], stored: [c], agentLog: attempt(x, 1, T0) });
  t.equal(b.byteMismatches, 1);
});

// A transaction to several recipients: one copy stored, another's R2 put failed, the sender told
// 451. The stored copy is refused (550) and bounced; the retry, no longer matching it, is a new
// message and is bounced again. That second DSN is explained, once per such copy, and only so.
const EARLIER = 'e'.repeat(32);
/** `x`, whose first attempt (answered 451 at T0 + 1 s) stored EARLIER for alice; the retry answered 250 at T0 + 3 s. */
function retried(index: number, recipient = KNOWN_USER): Sent {
  return { ...sent(index), tempfailed: [{ startedAt: T0, answeredAt: T0 + 1000, ids: new Map([[recipient, EARLIER]]) }], answeredAt: T0 + 3000 };
}
/** The agent's log line for a copy Dovecot refused (550), acked at `at`. */
const refusedLine = (id: string, at: number): string =>
  JSON.stringify({ ts: new Date(at).toISOString(), event: 'deliver.acked', id, attempt: 1, outcome: 'acked', results: ['permfail:550'] });

t.test('a copy stored by an attempt answered 4xx, bounced before the retry: its DSN is explained, counted apart', async (t) => {
  const x = retried(31);
  const b = await books({ sent: [x], dsns: [dsn(x, T0 + 900, undefined, EARLIER), dsn(x, T0 + 5000)], agentLog: refusedLine(EARLIER, T0 + 800) });
  t.match(b, { bounced: 1, bounceDuplicates: 0, explainedBounceDuplicates: 0, tempfailDsns: 1, badBounces: 0, lost: 0 });
  const later = await books({ sent: [x], dsns: [dsn(x, T0 + 4500, undefined, EARLIER), dsn(x, T0 + 5000)], agentLog: refusedLine(EARLIER, T0 + 4000) });
  t.match(later, { bounceDuplicates: 1, tempfailDsns: 0 }, 'refused only after the retry was answered: the retry should have matched it');
  const lost = await books({ sent: [x], dsns: [dsn(x, T0 + 900, undefined, EARLIER)], agentLog: refusedLine(EARLIER, T0 + 800) });
  t.match(lost, { lost: 1, bounced: 0, tempfailDsns: 1 }, 'the earlier copy\'s DSN is no end of the copy the sender got 250 for');
  // The handoff's answer lost (a Worker restart): the copy's queue row says when it was stored.
  const untold: Sent = { ...x, tempfailed: [{ startedAt: T0, answeredAt: T0 + 1000, ids: new Map() }] };
  const storedAt = (at: number) => (id: string) => Promise.resolve(id === EARLIER ? { state: 'bounced', failure: null, receivedAt: at } : null);
  const dsns = [dsn(x, T0 + 900, undefined, EARLIER), dsn(x, T0 + 5000)];
  const placed = await books({ sent: [untold], dsns, agentLog: refusedLine(EARLIER, T0 + 800), lookup: storedAt(T0 + 500) });
  t.match(placed, { bounced: 1, bounceDuplicates: 0, tempfailDsns: 1 }, 'stored while the attempt answered 4xx ran');
  const outside = await books({ sent: [untold], dsns, agentLog: refusedLine(EARLIER, T0 + 800), lookup: storedAt(T0 + 1500) });
  t.match(outside, { bounceDuplicates: 1, tempfailDsns: 0 }, 'stored after that attempt was answered: not its copy');
});

t.test('two extra DSNs with one attempt answered 4xx: one is still unexplained', async (t) => {
  const x = retried(32);
  const log = refusedLine(EARLIER, T0 + 800);
  const twiceEarlier = await books({ sent: [x], dsns: [dsn(x, T0 + 900, undefined, EARLIER), dsn(x, T0 + 950, undefined, EARLIER), dsn(x, T0 + 5000)], agentLog: log });
  t.match(twiceEarlier, { bounced: 1, tempfailDsns: 1, bounceDuplicates: 1 });
  const twiceFinal = await books({ sent: [x], dsns: [dsn(x, T0 + 900, undefined, EARLIER), dsn(x, T0 + 5000), dsn(x, T0 + 6000)], agentLog: log });
  t.match(twiceFinal, { bounced: 1, tempfailDsns: 1, bounceDuplicates: 1 });
  const OTHER = 'd'.repeat(32);
  const untold: Sent = { ...x, tempfailed: [{ startedAt: T0, answeredAt: T0 + 1000, ids: new Map() }] };
  const twoStored = await books({
    sent: [untold], dsns: [dsn(x, T0 + 900, undefined, EARLIER), dsn(x, T0 + 950, undefined, OTHER), dsn(x, T0 + 5000)],
    agentLog: [refusedLine(EARLIER, T0 + 800), refusedLine(OTHER, T0 + 850)].join('\n'),
    lookup: (id) => Promise.resolve(id === EARLIER || id === OTHER ? { state: 'bounced', failure: null, receivedAt: T0 + 500 } : null),
  });
  t.match(twoStored, { tempfailDsns: 1, bounceDuplicates: 1 }, 'two copies placed in one attempt: one explained');
  t.match(twiceFinal.problems.join('\n'), /2 DSNs \(DSNs for e{32}, 0{30}20, 0{30}20; attempts answered 4xx stored e{32} \(answered [^)]*\)\): message 5-32/);
});

t.test('an extra DSN with no attempt answered 4xx (or another recipient\'s) is still caught', async (t) => {
  const log = refusedLine(EARLIER, T0 + 800);
  const plain = sent(33);
  const none = await books({ sent: [plain], dsns: [dsn(plain, T0 + 900, undefined, EARLIER), dsn(plain, T0 + 5000)], agentLog: log });
  t.match(none, { bounced: 1, tempfailDsns: 0, bounceDuplicates: 1 });
  const other = retried(34, 'bob@example.test');
  const elsewhere = await books({ sent: [other], dsns: [dsn(other, T0 + 900, undefined, EARLIER), dsn(other, T0 + 5000)], agentLog: log });
  t.match(elsewhere, { tempfailDsns: 0, bounceDuplicates: 1 }, 'the copy was bob\'s, the DSNs alice\'s');
  const x = retried(35);
  const sameId = await books({ sent: [x], dsns: [dsn(x, T0 + 4000), dsn(x, T0 + 5000)], agentLog: log });
  t.match(sameId, { tempfailDsns: 0, bounceDuplicates: 1 }, 'both DSNs name the final copy');
});

// Seed 52, message 52-278 to ghost: attempt 1 stored a copy and was answered 451 (a Worker
// restart), later attempts 451 with no copy for ghost, the copy refused by Dovecot and bounced
// after them, the last attempt refused ghost at SMTP (the list). The sender got the refusal and
// the copy's DSN: one notice more per attempt answered 4xx, for the copy stored while it ran.
/** `x` to alice: attempt 1 (T0 to T0 + 1 s) stored EARLIER (told, or placed by its row when not), attempt 2 (451 at T0 + 2 s) none; alice refused at SMTP at T0 + 3 s. */
function refusedAfter4xx(index: number, told = true): Sent {
  const x = sent(index);
  return {
    ...x, ids: new Map(), refusedAtSmtp: new Set([KNOWN_USER]), answeredAt: T0 + 3000,
    tempfailed: [{ startedAt: T0, answeredAt: T0 + 1000, ids: told ? new Map([[KNOWN_USER, EARLIER]]) : new Map() }, { startedAt: T0 + 1500, answeredAt: T0 + 2000, ids: new Map() }],
  };
}
const storedAt = (at: number, ...ids: string[]) => (id: string) => Promise.resolve(ids.includes(id) ? { state: 'bounced', failure: null, receivedAt: at } : null);

t.test('refused at SMTP after an attempt answered 4xx stored a copy: that copy\'s DSN is explained, counted apart', async (t) => {
  const x = refusedAfter4xx(41);
  // Refused by Dovecot after the second attempt was answered: still owed then, so the retry rule alone would not explain it.
  const b = await books({ sent: [x], dsns: [dsn(x, T0 + 2600, undefined, EARLIER)], agentLog: refusedLine(EARLIER, T0 + 2500) });
  t.match(b, { refusedAtSmtp: 1, tempfailDsns: 1, badBounces: 0, bounceDuplicates: 0, lost: 0, strays: 0 });
  const untold = refusedAfter4xx(41, false);
  const placed = await books({ sent: [untold], dsns: [dsn(x, T0 + 2600, undefined, EARLIER)], agentLog: refusedLine(EARLIER, T0 + 2500), lookup: storedAt(T0 + 500, EARLIER) });
  t.match(placed, { refusedAtSmtp: 1, tempfailDsns: 1, badBounces: 0 }, 'the handoff\'s answer lost: placed by its queue row');
});

t.test('refused at SMTP, one attempt answered 4xx, two DSNs: one is still caught', async (t) => {
  const x = refusedAfter4xx(42);
  const log = refusedLine(EARLIER, T0 + 2500);
  const twice = await books({ sent: [x], dsns: [dsn(x, T0 + 2600, undefined, EARLIER), dsn(x, T0 + 2700, undefined, EARLIER)], agentLog: log });
  t.match(twice, { refusedAtSmtp: 1, tempfailDsns: 1, badBounces: 1 });
  t.match(twice.problems.join('\n'), /refused at SMTP, yet bounced too \(DSNs for e{32}, e{32}; attempts answered 4xx stored e{32} \(answered [^)]*\), none \(answered [^)]*\)\): message 5-42/);
  // Two copies placed in the one attempt that stored any: one explained.
  const OTHER = 'd'.repeat(32);
  const untold = refusedAfter4xx(42, false);
  const two = await books({
    sent: [untold], dsns: [dsn(x, T0 + 2600, undefined, EARLIER), dsn(x, T0 + 2700, undefined, OTHER)],
    agentLog: [log, refusedLine(OTHER, T0 + 2550)].join('\n'), lookup: storedAt(T0 + 500, EARLIER, OTHER),
  });
  t.match(two, { tempfailDsns: 1, badBounces: 1 }, 'one per attempt answered 4xx');
});

t.test('refused at SMTP and bounced with no attempt answered 4xx (or a copy stored outside it) is still caught', async (t) => {
  const plain: Sent = { ...sent(43), ids: new Map(), refusedAtSmtp: new Set([KNOWN_USER]), answeredAt: T0 + 3000 };
  const log = refusedLine(EARLIER, T0 + 2500);
  const none = await books({ sent: [plain], dsns: [dsn(plain, T0 + 2600, undefined, EARLIER)], agentLog: log });
  t.match(none, { refusedAtSmtp: 1, tempfailDsns: 0, badBounces: 1 });
  t.match(none.problems.join('\n'), /refused at SMTP, yet bounced too/);
  const untold = refusedAfter4xx(44, false);
  const outside = await books({ sent: [untold], dsns: [dsn(untold, T0 + 2600, undefined, EARLIER)], agentLog: log, lookup: storedAt(T0 + 1200, EARLIER) });
  t.match(outside, { tempfailDsns: 0, badBounces: 1 }, 'stored between the attempts: no attempt answered 4xx left it');
});

t.test('a replayed message ends under the new id the replay gave it; a replay not on record leaves the old id lost', async (t) => {
  const x = sent(36, '');
  const NEW = 'a'.repeat(32);
  const lookup = (id: string): Promise<{ state: string; failure: string } | null> =>
    Promise.resolve(id === NEW ? { state: 'dead-letter', failure: 'refused' } : null);
  const outcomes: [readonly string[], string][] = [];
  const followed = await books({ sent: [x], lookup, replayedAs: new Map([[qidOf(36), NEW]]), onOutcome: (ids, o) => outcomes.push([ids, o]) });
  t.match(followed, { deadLettered: 1, nullSenderDeadLettered: 1, lost: 0 });
  t.same(outcomes, [[[qidOf(36), NEW], 'dead-lettered']]);
  const notFollowed = await books({ sent: [x], lookup });
  t.equal(notFollowed.lost, 1);
});
