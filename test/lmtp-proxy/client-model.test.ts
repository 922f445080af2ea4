// The LMTP client against a model (fast-check): random sequences of messages on one client, each
// against a server whose answers follow a random plan (planned-server.ts: what it offers, how it
// cuts its replies, each MAIL/RCPT/final code, going away before MAIL's reply or after k final
// replies, storing or not what it did not answer). The model is a pure function of what the
// server logged: the result each recipient must get. Checked after every message:
// - one result per envelope recipient, in order, equal to the model's (code and outcome);
// - delivered only when the server answered 2xx after the body, and then stored once;
// - stored but not answered 2xx: a tempfail whose text says it may have been delivered;
// - a second transaction for one message only after the first got no answer to MAIL on a kept
//   connection (nothing sent can have been stored), never more than one;
// - what was stored is the message's bytes exactly.
// A failure prints the seed and the shrunk case: LMTP_MODEL_SEED=<seed> LMTP_MODEL_PATH=<path>
// replays it; LMTP_MODEL_RUNS sets how many cases (default 120).
import t from 'tap';
import fc from 'fast-check';
import { LmtpClient, MAY_BE_DELIVERED, type RecipientReply } from '../../lmtp-proxy/client.ts';
import { startPlannedServer, type ConnPlan, type TxLog, type TxPlan } from './planned-server.ts';

interface Msg { recipients: string[]; size: 'small' | 'large'; sizeGiven: boolean }
interface Case { conns: ConnPlan[]; txs: TxPlan[]; msgs: Msg[] }
interface Want { code: number; outcome: RecipientReply['outcome']; unknown: boolean }

const ADDRS = ['a@example.org', 'b@example.org', 'c@example.org'];

const connPlan: fc.Arbitrary<ConnPlan> = fc.record({
  pipelining: fc.boolean(), chunking: fc.boolean(), enhanced: fc.boolean(),
  writes: fc.constantFrom<ConnPlan['writes']>('each', 'together', 'together', 'dribble'),
});
const txPlan: fc.Arbitrary<TxPlan> = fc.record({
  mail: fc.constantFrom<TxPlan['mail']>(250, 250, 250, 250, 250, 451, 550, 421, 'drop'),
  rcpt: fc.array(fc.constantFrom(250, 250, 250, 450, 550), { minLength: 1, maxLength: 3 }),
  final: fc.array(fc.constantFrom(250, 250, 250, 452, 552), { minLength: 1, maxLength: 3 }),
  fault: fc.option(fc.record({ after: fc.nat(2), how: fc.constantFrom<'drop' | '421'>('drop', '421'), storeUnanswered: fc.boolean() }), { freq: 4 }),
});
const msg: fc.Arbitrary<Msg> = fc.record({
  recipients: fc.array(fc.constantFrom(...ADDRS), { minLength: 1, maxLength: 4 }),
  size: fc.constantFrom<Msg['size']>('small', 'small', 'large'),
  sizeGiven: fc.boolean(),
});
const testCase: fc.Arbitrary<Case> = fc.record({
  conns: fc.array(connPlan, { minLength: 1, maxLength: 4 }),
  txs: fc.array(txPlan, { minLength: 1, maxLength: 8 }),
  msgs: fc.array(msg, { minLength: 1, maxLength: 6 }),
});

/** A body with dots at line starts (DATA stuffs them) ending in CRLF; 'large' is past ONE_WRITE (64 KiB). */
function bodyOf(n: number, size: Msg['size']): Buffer {
  const head = `Message-ID: <m${n}@model.test>\r\nSubject: model ${n}\r\n\r\n.dot\r\n`;
  const fill = size === 'large' ? 'x'.repeat(70 * 1024) + '\r\n' : 'small\r\n';
  return Buffer.from(head + fill + '.\r\nlast\r\n', 'latin1');
}

const byClass = (code: number): RecipientReply['outcome'] => (code < 300 ? 'delivered' : code >= 500 ? 'permfail' : 'tempfail');

/** The model: what each recipient's result must be, from the last transaction of the message. */
function expected(recipient: string, tx: TxLog): Want {
  if (tx.mailReply === null) return { code: 0, outcome: 'tempfail', unknown: false };
  if (tx.mailReply !== 250) return { code: tx.mailReply, outcome: tx.mailReply === 421 ? 'tempfail' : byClass(tx.mailReply), unknown: false };
  const rcpt = tx.rcpts.find((r) => r.address === recipient);
  if (!rcpt) return { code: 0, outcome: 'tempfail', unknown: false };
  if (rcpt.reply >= 300) return { code: rcpt.reply, outcome: byClass(rcpt.reply), unknown: false };
  const final = tx.finals.find((f) => f.address === recipient);
  if (!final) return { code: 0, outcome: 'tempfail', unknown: false };  // the body never completed
  // The server went away in its place: a 421 answers every reply still owed; a drop, none.
  if (final.reply === null) return { code: tx.wentAway === '421' ? 421 : 0, outcome: 'tempfail', unknown: true };
  return { code: final.reply, outcome: byClass(final.reply), unknown: false };
}

async function runCase(c: Case): Promise<string | null> {
  const server = await startPlannedServer();
  server.conns.push(...c.conns);
  server.txs.push(...c.txs);
  const client = new LmtpClient({ protocol: 'lmtp', host: '127.0.0.1', port: server.port },
    { localName: 'client.test', timeouts: { connect: 2000, greeting: 2000, command: 2000, dataBlock: 2000, final: 2000 } });
  const stored = new Map<string, number>();
  try {
    for (const [n, m] of c.msgs.entries()) {
      const body = bodyOf(n, m.size);
      const before = server.log.length;
      const connsBefore = server.connections;
      async function* pieces(): AsyncGenerator<Uint8Array> { for (let i = 0; i < body.length; i += 4096) yield body.subarray(i, i + 4096); }
      const results = await client.deliver({ sender: 's@example.net', recipients: m.recipients }, pieces(), m.sizeGiven ? { size: body.length } : {});
      const txs = server.log.slice(before);
      const where = `message ${n} (${JSON.stringify(m)}), transactions ${JSON.stringify(txs.map((x) => ({ ...x, body: x.body ? x.body.length : null })))}, results ${JSON.stringify(results)}`;
      if (results.length !== m.recipients.length || results.some((r, i) => r.recipient !== m.recipients[i])) return `results not one per recipient in order: ${where}`;
      const last = txs[txs.length - 1];
      if (!last) return `no transaction: ${where}`;
      if (txs.length > 2) return `more than two transactions for one message: ${where}`;
      if (txs.length === 2) {
        const first = txs[0];
        const retryable = first && (first.mailReply === null || first.mailReply === 421) && first.conn < connsBefore;
        if (!retryable) return `sent twice though the first transaction was answered or on a fresh connection: ${where}`;
        if (first && first.stored.length > 0) return `retried after something was stored: ${where}`;
      }
      for (const tx of txs) {
        if (tx.stored.length > 0 && !tx.body?.equals(body)) return `stored bytes differ from the message: ${where}`;
        for (const r of tx.stored) stored.set(`${n} ${r}`, (stored.get(`${n} ${r}`) ?? 0) + 1);
      }
      for (const r of results) {
        const want = expected(r.recipient, last);
        const copies = stored.get(`${n} ${r.recipient}`) ?? 0;
        if (r.code !== want.code || r.outcome !== want.outcome) return `${r.recipient}: got ${r.code} ${r.outcome}, the model says ${want.code} ${want.outcome}: ${where}`;
        if (want.unknown !== r.text.includes(MAY_BE_DELIVERED)) return `${r.recipient}: "may have been delivered" ${want.unknown ? 'missing' : 'where it cannot be'}: ${where}`;
        if (r.outcome === 'delivered' && copies !== 1) return `${r.recipient}: delivered but ${copies} copies stored: ${where}`;
        if (copies > 1) return `${r.recipient}: ${copies} copies stored: ${where}`;
        if (copies === 1 && r.outcome !== 'delivered' && !r.text.includes(MAY_BE_DELIVERED)) return `${r.recipient}: stored, but the result says it was not: ${where}`;
      }
    }
    return null;
  } finally {
    await client.close().catch(() => undefined);
    await server.close();
  }
}

// Shrunk cases of bugs the model found (or would find again): each stays a test of its own.
const KEPT: { name: string; c: Case }[] = [
  {
    // One-write BDAT: the second RCPT refused, so one final reply is owed, not two; counting
    // both, the client took the next message's MAIL reply (550) for the missing final reply,
    // and that message's RCPT reply (503) for its MAIL's.
    name: 'a small message in one write with one recipient refused, then the next message',
    c: {
      conns: [{ pipelining: true, chunking: true, enhanced: false, writes: 'each' }],
      txs: [{ mail: 250, rcpt: [250, 450], final: [250], fault: null }, { mail: 550, rcpt: [250], final: [250], fault: null }],
      msgs: [{ recipients: ['b@example.org', 'a@example.org'], size: 'small', sizeGiven: true }, { recipients: ['a@example.org'], size: 'small', sizeGiven: false }],
    },
  },
];

for (const { name, c } of KEPT) {
  t.test(`kept case: ${name}`, async (t) => {
    t.equal(await runCase(c), null);
  });
}

const runs = Number(process.env.LMTP_MODEL_RUNS ?? 120);
const seed = process.env.LMTP_MODEL_SEED === undefined ? undefined : Number(process.env.LMTP_MODEL_SEED);
const path = process.env.LMTP_MODEL_PATH;

t.test(`the client against the model: ${runs} random sequences of messages and server plans`, async (t) => {
  const r = await fc.check(fc.asyncProperty(testCase, async (c) => {
    const why = await runCase(c);
    if (why) throw new Error(why);
  }), { numRuns: runs, ...(seed === undefined ? {} : { seed }), ...(path === undefined ? {} : { path, endOnFailure: true }) });
  if (r.failed) {
    t.fail(`LMTP_MODEL_SEED=${r.seed} LMTP_MODEL_PATH=${r.counterexamplePath ?? ''} npm test -- test/lmtp-proxy/client-model.test.ts\n` +
      `shrunk case: ${JSON.stringify(r.counterexample?.[0])}\n${r.errorInstance instanceof Error ? r.errorInstance.message : String(r.errorInstance)}`);
  } else t.pass(`${r.numRuns} sequences, seed ${r.seed}`);
});
