// Model-based test of the queue (issue #22): random sequences of commands (ingest, agents and
// their answers, operator actions, the clock, restarts) applied to the model (model.ts) and to
// the real RelayQueue (real.ts); after each command the two must agree, and at the end of each
// sequence everything must settle with a healthy agent. fast-check generates and shrinks.
import fc from 'fast-check';
import { cloudflareBlock } from '../../local/email-routing.ts';
import { shardName } from '../../bridge-worker/shard-hash.ts';
import type { QueueMessage } from '../../protocol/queue.ts';
import {
  CFG, accept, allowBounce, allowLease, bounced, dedupe, disconnect, fail, finalProblems, hello, held, idleWork,
  live, newModel, realState, restart, settle, tick, tooOld, leasable, type MMsg, type Model,
} from './model.ts';
import { Real, SHARDS, sha256, type RealAgent } from './real.ts';
import { MAX_RESULT_TEXT, PONG } from '../../protocol/wire.ts';

interface Ctx { model: Model; real: Real }
type Cmd = fc.AsyncCommand<Model, Real>;

/** bridge-worker/bodies.ts HEAD_BYTES (not imported: it needs workerd's types). */
const HEAD_BYTES = 64 * 1024;
const INLINE_MAX_BYTES = CFG.inlineMaxBytes;

const SENDERS = ['alice@sender.test', 'bob@sender.test', ''];

/** What the sequences did, by command and outcome: a run that never reached a state tests nothing there. */
export const stats = new Map<string, number>();
export function count(what: string): void {
  stats.set(what, (stats.get(what) ?? 0) + 1);
}

/** A command's kind, its message and lease numbers left out. */
function label(c: Cmd): string {
  return String(c).replace(/\b(lease|message|task|rcpt|sender|of|window) \d+/g, '$1 #');
}

/** Milliseconds spent per command kind (throughput: where the time goes). */
export const timing = new Map<string, number>();

function fault(what: string): never {
  throw new Error(`model: ${what}`);
}

/** The message a command names by number: the k-th accepted (mod how many), or none. */
function pick(model: Model, k: number): MMsg | undefined {
  return model.msgs.length === 0 ? undefined : model.msgs[k % model.msgs.length];
}

// ---- sync: observe what the object did by itself, check it, compare every message -----------

async function sync(model: Model, real: Real, waited = 0): Promise<void> {
  await real.barrier();
  let rows = await real.rows();
  // Leases the object made show as frames: each must be one the model allows.
  for (let round = 0; ; round++) {
    for (const a of real.agents.values()) {
      const ma = model.agents.get(a.name) ?? fault(`agent ${a.name} unknown to the model`);
      for (; a.read < a.raw.seen.length; a.read++) {
        const s = a.raw.seen[a.read];
        if (!s) fault(`agent ${a.name}: no frame at ${a.read}`);
        // A body at most INLINE_MAX_BYTES comes in chunks after its message frame (Answer reads them).
        if (s.kind === 'chunk') continue;
        if (s.kind === 'text') {
          if (s.text !== PONG) fault(`agent ${a.name} got a frame it cannot parse: ${s.text.slice(0, 300)}`);
          continue;
        }
        const f = s.frame;
        if (f.type === 'end') continue;
        if (f.type !== 'message' && f.type !== 'bounce') fault(`agent ${a.name} got an unexpected ${f.type} frame`);
        const m = model.msgs.find((x) => x.id === f.id) ?? fault(`agent ${a.name} got a ${f.type} frame for unknown message ${f.id}`);
        if (f.type === 'message') {
          // The age limit holds at every lease: messages before this one may have expired on the way.
          expireSeen(model, rows);
          const why = allowLease(model, m, ma);
          if (why) fault(why);
          if (f.recipients.length !== 1 || f.recipients[0] !== m.rcpt) fault(`message ${m.n} leased with recipients ${JSON.stringify(f.recipients)}, owed [${m.rcpt}]`);
          if (f.sender !== m.sender) fault(`message ${m.n} leased with sender <${f.sender}>`);
          m.state = 'in-flight';
          m.lease = a.name;
          m.lastAgent = a.name;
          m.affinityUntil = 0;
        } else {
          expireSeen(model, rows);  // a message expired at lease has its bounce leased in the same pump
          if (f.reason === 'delayed') fault('a delay warning, though DELAY_WARNING_MS is off');
          const why = allowBounce(model, m, ma);
          if (why) fault(why);
          if (f.sender !== m.sender) fault(`bounce of message ${m.n} to <${f.sender}>, its sender is <${m.sender}>`);
          if ((f.results.length !== 1 || f.results[0]?.recipient !== m.rcpt)) {
            fault(`bounce of message ${m.n} reports ${JSON.stringify(f.results.map((x) => x.recipient))}, not its one recipient once`);
          }
          m.lease = a.name;
        }
      }
    }
    expireSeen(model, rows);
    const missing = rows.filter((r) => r.leaseSession !== null && !model.msgs.some((m) => m.id === r.id && m.lease !== null));
    if (missing.length === 0) break;
    if (round > 200) fault(`leases without a frame: ${missing.map((r) => r.id).join(', ')}`);
    await new Promise((r) => setTimeout(r, 10));
    rows = await real.rows();
  }
  // A message past its age that the queue has not failed yet: the alarm for it is due at once
  // (a connection's close that released it can land after the command that moved the clock);
  // give that alarm up to a second of real time before calling it idle.
  if (waited < 20 && model.msgs.some((x) => leasable(model, x) && tooOld(model, x))) {
    await new Promise((r) => setTimeout(r, 50));
    return sync(model, real, waited + 1);
  }
  compare(model, real, rows);
  const idle = idleWork(model);
  if (idle) fault(idle);
  await checkBodies(real, rows);
}

/** Queued messages the real queue failed as expired: allowed when the model says they were too old. */
function expireSeen(model: Model, rows: QueueMessage[]): void {
  for (const m of model.msgs) {
    if (m.state !== 'queued') continue;
    const r = rows.find((x) => x.id === m.id);
    if (!r || (r.state !== 'bouncing' && r.state !== 'dead-letter') || r.failure !== 'expired') continue;
    // The alarm fails every waiting message past its age, also one that waits for its agent's
    // affinity or an unanswered lease's delay (a DSN then still asks that agent's journal first).
    if (!tooOld(model, m)) fault(`message ${m.n} expired at ${model.now - m.retryFrom} ms of age`);
    fail(model, m, 'expired');
  }
}

function compare(model: Model, real: Real, rows: QueueMessage[]): void {
  const byId = new Map(rows.map((r) => [r.id, r]));
  for (const m of model.msgs) {
    const want = realState(m);
    const r = byId.get(m.id);
    byId.delete(m.id);
    const tag = `message ${m.n} (${m.id.slice(0, 8)})`;
    if (want === null) {
      if (r) fault(`${tag} should be gone (${m.state}) but is ${r.state}`);
      continue;
    }
    if (!r) fault(`${tag} should be ${want} but has no row`);
    if (r.state !== want) fault(`${tag} should be ${want} but is ${r.state}`);
    const session = m.lease === null ? null : (real.agents.get(m.lease)?.session ?? fault(`${tag} leased to gone agent ${m.lease}`));
    if (r.leaseSession !== session) fault(`${tag} (${want}) lease ${r.leaseSession} but the model says ${session}`);
    if ((want === 'bouncing' || want === 'bounced' || want === 'dead-letter') && r.failure !== m.failure) {
      fault(`${tag} failed as ${r.failure}, the model says ${m.failure}`);
    }
    if ((want === 'bouncing' || want === 'bounced' || want === 'dead-letter')) {
      const mine = r.results.filter((x) => x.recipient === m.rcpt);
      if (mine.length !== 1) fault(`${tag} (${want}) has ${mine.length} results for its recipient: ${JSON.stringify(r.results).slice(0, 300)}`);
    }
    if ((want === 'queued' || want === 'deferred' || want === 'bouncing') && (r.nextAttemptAt ?? 0) !== m.notBefore) {
      fault(`${tag} (${want}) next attempt at ${r.nextAttemptAt}, the model says ${m.notBefore} (now ${model.now})`);
    }
    if ((want === 'queued' || want === 'deferred' || want === 'hold' || want === 'in-flight') && (r.recipients.length !== 1 || r.recipients[0] !== m.rcpt)) {
      fault(`${tag} (${want}) owes ${JSON.stringify(r.recipients)}, the model [${m.rcpt}]`);
    }
  }
  for (const r of byId.values()) fault(`a row the model does not know: ${r.id} ${r.state}`);
}

/** R2 holds exactly the bodies of the rows (deletes run after the commit: given a moment). */
async function checkBodies(real: Real, rows: QueueMessage[]): Promise<void> {
  const want = rows.map((r) => r.bodyKey).filter((k) => k !== null).sort().join(' ');
  const ok = async (): Promise<boolean> => (await real.bodyKeys()).join(' ') === want;
  if (await ok()) return;
  await real.until(ok, 'R2 to hold exactly the bodies of the rows', 3_000).catch(async () => {
    fault(`R2 keys [${(await real.bodyKeys()).join(' ')}] but rows own [${want}]`);
  });
}

// ---- commands -------------------------------------------------------------------------------

type Size = 'small' | 'head-1' | 'head' | 'head+1' | 'large';

export class Ingest implements Cmd {
  readonly rcpt: number;
  readonly sender: number;
  readonly size: Size;
  readonly resend: number | null;
  constructor(rcpt: number, sender: number, size: Size, resend: number | null) { this.rcpt = rcpt; this.sender = sender; this.size = size; this.resend = resend; }
  check(): boolean { return true; }
  async run(model: Model, real: Real): Promise<void> {
    count(label(this));
    const earlier = this.resend === null ? undefined : pick(model, this.resend);
    const sender = earlier?.sender ?? SENDERS[this.sender % SENDERS.length] ?? '';
    const rcpt = earlier?.rcpt ?? real.rcpts[this.rcpt % real.rcpts.length] ?? '';
    // A millisecond between messages: the object leases in order of arrival (ties go by random id).
    tick(model, 1);
    await real.clock(model.now);
    real.clockAt = model.now;
    const n = model.msgs.length;
    const body = earlier?.body ?? makeBody(real, n, sender, rcpt, this.size);
    const res = await real.post(sender, rcpt, body);
    if (model.list !== null && !model.list.has(rcpt)) {
      if (res.status !== 550) fault(`ingest to ${rcpt}, not on the list: ${res.status} ${JSON.stringify(res.body)}`);
      return sync(model, real);
    }
    if (res.status !== 200) fault(`ingest: ${res.status} ${JSON.stringify(res.body)}`);
    const key = `${sender}\n${rcpt}\n${sha256(body.toString('latin1'))}`;
    const { dup } = dedupe(model, key);
    const id = String(res.body.id);
    if (dup.length > 0) {
      if (res.body.duplicate !== true || !dup.some((m) => m.id === id)) {
        fault(`a resend of message ${dup.map((m) => m.n).join('/')} answered ${JSON.stringify(res.body)}, not as its duplicate`);
      }
    } else {
      if (res.body.duplicate !== false) {
        const was = model.msgs.find((m) => m.id === id);
        fault(`a new message answered as a duplicate of ${was ? `message ${was.n}, ${was.state}` : id}`);
      }
      accept(model, { id, sender, rcpt, body, key });
    }
    await sync(model, real);
  }
  toString(): string { return `ingest(rcpt ${this.rcpt}, sender ${this.sender}, ${this.size}${this.resend === null ? '' : `, resend of ${this.resend}`})`; }
}

function makeBody(real: Real, n: number, sender: string, rcpt: string, size: Size): Buffer {
  const head = Buffer.from(`From: <${sender || 'mailer-daemon@sender.test'}>\r\nTo: <${rcpt}>\r\nSubject: model ${real.seq}.${n}\r\nMessage-ID: <${real.seq}.${n}.${Date.now()}@model.test>\r\n\r\n`);
  // Sizes around HEAD_BYTES (what email() reads itself before piping the rest into R2), counted
  // with the block as email() sees them.
  const block = cloudflareBlock(sender, rcpt).length;
  const total = { small: 200, 'head-1': HEAD_BYTES - 1 - block, head: HEAD_BYTES - block, 'head+1': HEAD_BYTES + 1 - block, large: 300_000 }[size];
  const fill = Buffer.alloc(Math.max(0, total - head.length), 'x');
  for (let i = 76; i < fill.length; i += 78) { fill[i] = 13; fill[i + 1] = 10; }
  return Buffer.concat([head, fill]);
}

export class Connect implements Cmd {
  readonly name: string;
  readonly window: number;
  readonly bounces: boolean;
  constructor(name: string, window: number, bounces: boolean) { this.name = name; this.window = window; this.bounces = bounces; }
  check(m: Model): boolean { return !m.agents.has(this.name); }
  async run(model: Model, real: Real): Promise<void> {
    count(label(this));
    const a = await real.connect(this.name, this.window, this.bounces);
    hello(model, { name: this.name, session: a.session, window: this.window, bounces: this.bounces });
    await sync(model, real);
  }
  toString(): string { return `connect(${this.name}, window ${this.window}, ${this.bounces ? 'bounce relay' : 'no bounce relay'})`; }
}

export class Disconnect implements Cmd {
  readonly name: string;
  constructor(name: string) { this.name = name; }
  check(m: Model): boolean { return m.agents.has(this.name); }
  async run(model: Model, real: Real): Promise<void> {
    count(label(this));
    await real.disconnect(this.name);
    disconnect(model, this.name);
    await sync(model, real);
  }
  toString(): string { return `disconnect(${this.name})`; }
}

/** What agent `name` holds in `state`; when it holds nothing so, what the other agent holds. */
function holding(model: Model, name: string, state: 'in-flight' | 'bouncing'): MMsg[] {
  const mine = model.msgs.filter((x) => x.lease === name && x.state === state);
  return mine.length > 0 ? mine : model.msgs.filter((x) => x.lease !== null && x.state === state);
}

type Reply = '250' | '451' | '550' | 'garbage' | 'long' | 'nack' | 'lost' | 'shutdown' | 'steal' | 'twice' | 'foreign';

/** The body of `m` as its lease delivered it: fetched from R2, or its chunks (credit given back). */
async function leasedBody(a: RealAgent, m: MMsg): Promise<Buffer> {
  const at = a.raw.seen.findLastIndex((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === m.id);
  const frame = a.raw.seen[at];
  if (frame?.kind !== 'frame' || frame.frame.type !== 'message') fault(`message ${m.n} in flight without its frame`);
  const f = frame.frame;
  if (f.fetch !== undefined) {
    if (m.body.length + (f.prefix ?? 0) <= INLINE_MAX_BYTES) fault(`message ${m.n} of ${f.size} bytes in R2, over the inline limit ${INLINE_MAX_BYTES}`);
    const got = await a.raw.fetchBody(m.id);
    if (got.status !== 200) fault(`body of message ${m.n} in flight: HTTP ${got.status}`);
    count('body read: fetched from R2');
    return got.bytes;
  }
  count('body read: chunks on the WebSocket');
  if (f.size > INLINE_MAX_BYTES) fault(`message ${m.n} of ${f.size} bytes in chunks, over the inline limit ${INLINE_MAX_BYTES}`);
  const end = await a.raw.until((seen) => {
    const i = seen.findIndex((x, k) => k > at && x.kind === 'frame' && x.frame.type === 'end' && x.frame.id === m.id);
    return i < 0 ? undefined : i;
  }, 5_000).catch(() => fault(`message ${m.n}: its chunks did not end`));
  const bytes = Buffer.concat(a.raw.seen.slice(at + 1, end).flatMap((x) => (x.kind === 'chunk' ? [x.data] : [])));
  if (bytes.length > 0) a.raw.send({ type: 'credit', bytes: bytes.length });
  return bytes.subarray(f.prefix ?? 0);
}

export class Answer implements Cmd {
  readonly name: string;
  readonly k: number;
  readonly reply: Reply;
  constructor(name: string, k: number, reply: Reply) { this.name = name; this.k = k; this.reply = reply; }
  check(m: Model): boolean { return m.msgs.some((x) => x.lease !== null && x.state === 'in-flight'); }
  async run(model: Model, real: Real): Promise<void> {
    count(label(this));
    const mine = holding(model, this.name, 'in-flight');
    const m = mine[this.k % mine.length] ?? fault('no lease');
    const who = m.lease ?? fault('no lease');
    const a = real.agents.get(who) ?? fault(`agent ${who} not connected`);
    if (this.reply === '250' || this.reply === 'lost' || this.reply === 'twice') {
      // The agent reads the body as it does before LMTP, bytes as sent: through the Worker from
      // R2, or, at most INLINE_MAX_BYTES, from the chunks that followed this lease's frame.
      const got = await leasedBody(a, m);
      if (!got.equals(m.body)) fault(`body of message ${m.n}: ${got.length} bytes differ from the ${m.body.length} sent`);
      m.deliveries++;
    }
    const result = (code: number, enhanced: string, outcome: string): string =>
      JSON.stringify({ type: 'ack', id: m.id, results: [{ recipient: m.rcpt, code, enhanced, text: `model ${code}`, outcome }] });
    switch (this.reply) {
      case '250': a.raw.send(result(250, '2.0.0', 'delivered')); settle(model, m, 'delivered'); break;
      // The same ack twice (a resend after a reconnect): the second is ignored.
      case 'twice':
        a.raw.send(result(250, '2.0.0', 'delivered'));
        a.raw.send(result(250, '2.0.0', 'delivered'));
        settle(model, m, 'delivered');
        break;
      // Another connection answers for a lease it does not hold: ignored, the lease stands.
      case 'foreign': {
        const other = [...real.agents.values()].find((x) => x.name !== who);
        if (other) other.raw.send(result(550, '5.1.1', 'permfail'));
        break;
      }
      case '451': a.raw.send(result(451, '4.2.0', 'tempfail')); settle(model, m, 'tempfail'); break;
      case '550': a.raw.send(result(550, '5.1.1', 'permfail')); settle(model, m, 'permfail'); break;
      // An answer about one message the object cannot parse: that message is deferred, the session stays.
      case 'garbage': a.raw.send(JSON.stringify({ type: 'ack', id: m.id, results: 'garbage' })); settle(model, m, 'tempfail'); break;
      // A reply text beyond the protocol's limit: that message is deferred, the session stays.
      case 'long':
        a.raw.send(JSON.stringify({ type: 'ack', id: m.id, results: [{ recipient: m.rcpt, code: 250, enhanced: '2.0.0', text: 'x'.repeat(MAX_RESULT_TEXT + 1), outcome: 'delivered' }] }));
        settle(model, m, 'tempfail');
        break;
      // What the agent says when the body fetch fails (edge-agent/session/body-fetch.ts).
      case 'nack': a.raw.send({ type: 'nack', id: m.id, reason: 'unavailable', text: 'model: body fetch failed' }); settle(model, m, 'tempfail'); break;
      // The agent is shutting down: the message goes back at once, not counted, and this
      // connection gets nothing more.
      case 'shutdown': {
        a.raw.send({ type: 'nack', id: m.id, reason: 'shutdown', text: 'model: shutting down' });
        m.state = 'queued';
        m.lease = null;
        const ma = model.agents.get(who);
        if (ma) ma.draining = true;
        break;
      }
      // Another agent's token asks for the body of this lease: only its holder may have it.
      case 'steal': {
        const other = [...real.agents.values()].find((x) => x.name !== who);
        if (!other) break;
        const got = await other.raw.fetchBody(m.id);
        if (got.status === 200) fault(`agent ${other.name} was given the body of message ${m.n}, leased to ${who}`);
        break;
      }
      // Delivered, and the connection dropped before the ack: the lost-reply window.
      case 'lost':
        m.lostReplies++;
        await real.disconnect(who);
        disconnect(model, who);
        break;
    }
    await sync(model, real);
  }
  toString(): string { return `answer(${this.name}, lease ${this.k}, ${this.reply})`; }
}

/** The agent saw its target come back (`retry`): every deferred message is due now. */
class RetryAll implements Cmd {
  readonly name: string;
  constructor(name: string) { this.name = name; }
  check(m: Model): boolean { return m.agents.has(this.name); }
  async run(model: Model, real: Real): Promise<void> {
    count(label(this));
    const a = real.agents.get(this.name) ?? fault(`agent ${this.name} not connected`);
    a.raw.send({ type: 'retry' });
    for (const m of model.msgs) if (m.state === 'deferred') { m.state = 'queued'; m.notBefore = 0; }
    await sync(model, real);
  }
  toString(): string { return `retry(${this.name})`; }
}

class Bounced implements Cmd {
  readonly name: string;
  readonly k: number;
  readonly status: 'sent' | 'deferred' | 'failed';
  constructor(name: string, k: number, status: 'sent' | 'deferred' | 'failed') { this.name = name; this.k = k; this.status = status; }
  check(m: Model): boolean { return m.msgs.some((x) => x.lease !== null && x.state === 'bouncing'); }
  async run(model: Model, real: Real): Promise<void> {
    count(label(this));
    const mine = holding(model, this.name, 'bouncing');
    const m = mine[this.k % mine.length] ?? fault('no bounce task');
    const who = m.lease ?? fault('no lease');
    const a = real.agents.get(who) ?? fault(`agent ${who} not connected`);
    const code = { sent: 250, deferred: 451, failed: 550 }[this.status];
    a.raw.send({ type: 'bounced', id: m.id, status: this.status, code, text: `model ${this.status}` });
    bounced(model, m, this.status);
    await sync(model, real);
  }
  toString(): string { return `bounced(${this.name}, task ${this.k}, ${this.status})`; }
}

type Op = 'hold' | 'release' | 'delete' | 'retry' | 'replay' | 'purge' | 'export';

const SUITS: Record<Op, (m: MMsg) => boolean> = {
  hold: (m) => m.state === 'queued' || m.state === 'deferred',
  release: (m) => m.state === 'hold',
  delete: (m) => live(m) && m.lease === null && m.state !== 'in-flight',
  retry: (m) => m.state === 'deferred',
  replay: (m) => m.state === 'dead-letter',
  purge: (m) => m.state === 'dead-letter' || m.state === 'bounced',
  export: live,
};

export class Admin implements Cmd {
  readonly op: Op;
  readonly k: number;
  readonly aimed: boolean;
  /** `aimed`: at a message in a state the operation is for, when there is one; else any message, any state. */
  constructor(op: Op, k: number, aimed: boolean) { this.op = op; this.k = k; this.aimed = aimed; }
  target(model: Model): MMsg | undefined {
    const fit = this.aimed ? model.msgs.filter(SUITS[this.op]) : [];
    return fit.length > 0 ? fit[this.k % fit.length] : pick(model, this.k);
  }
  check(model: Model): boolean {
    return this.target(model) !== undefined;
  }
  async run(model: Model, real: Real): Promise<void> {
    count(label(this));
    const m = this.target(model) ?? fault('no message');
    const before = m.state;
    const path = `/admin/messages/${m.id}`;
    let ok: boolean;
    const r = this.op === 'export' ? await real.admin('GET', `${path}/raw`)
      : this.op === 'purge' ? await real.admin('DELETE', path)
        : await real.admin('POST', `${path}/${this.op}`);
    switch (this.op) {
      case 'hold':
        ok = m.state === 'queued' || m.state === 'deferred';
        if (ok) { m.state = 'hold'; m.notBefore = 0; m.affinityUntil = 0; }
        break;
      case 'release':
        ok = m.state === 'hold';
        if (ok) { m.state = 'queued'; m.notBefore = 0; }
        break;
      case 'delete':
        ok = live(m) && m.state !== 'in-flight' && m.lease === null;
        if (ok) m.state = 'deleted';
        break;
      case 'retry':
        ok = m.state === 'deferred';
        if (ok) { m.state = 'queued'; m.notBefore = 0; }
        break;
      case 'replay':
        ok = m.state === 'dead-letter';
        // Requeued under a new id (store.replay: the agent's journal knows the old one's answer).
        if (ok) Object.assign(m, { state: 'queued', notBefore: 0, retryFrom: model.now, leaseEnds: 0, affinityUntil: 0, lastAgent: null, failure: null, settledAt: null, refused: false });
        if (ok && r.status === 200) {
          const id = r.json?.id;
          if (typeof id !== 'string' || id === m.id || r.json?.replayedFrom !== m.id) fault(`replay of message ${m.n}: answered ${JSON.stringify(r.json)}, not a new id replayed from ${m.id}`);
          else m.id = id;
        }
        break;
      case 'purge':
        ok = m.state === 'dead-letter' || m.state === 'bounced';
        if (ok) m.state = 'purged';
        break;
      case 'export':
        ok = live(m);
        if (ok && r.status === 200) {
          const prefix = Number(r.headers.get('x-message-prefix'));
          if (!r.bytes.subarray(prefix).equals(m.body)) fault(`export of message ${m.n}: the bytes after the block are not those sent`);
          if (Number(r.headers.get('x-message-size')) !== r.bytes.length) fault(`export of message ${m.n}: X-Message-Size ${r.headers.get('x-message-size')}, ${r.bytes.length} bytes`);
        }
        break;
    }
    count(`admin ${this.op} on ${before}: ${ok ? 'done' : 'refused'}`);
    const want = ok ? 200 : this.op === 'export' ? 404 : 409;
    if (r.status !== want) fault(`${this.op} of message ${m.n} (${m.state} in the model): HTTP ${r.status}, expected ${want}: ${r.bytes.toString('utf8').slice(0, 200)}`);
    await sync(model, real);
  }
  toString(): string { return `admin(${this.op}, ${this.aimed ? 'aimed ' : ''}message ${this.k})`; }
}

class Flush implements Cmd {
  check(): boolean { return true; }
  async run(model: Model, real: Real): Promise<void> {
    count(label(this));
    const r = await real.admin('POST', '/admin/flush');
    const due = model.msgs.filter((m) => m.state === 'deferred');
    for (const m of due) { m.state = 'queued'; m.notBefore = 0; }
    if (r.json?.flushed !== due.length) fault(`flush woke ${JSON.stringify(r.json)}, the model ${due.length}`);
    await sync(model, real);
  }
  toString(): string { return 'flush()'; }
}

class Status implements Cmd {
  check(): boolean { return true; }
  async run(model: Model, real: Real): Promise<void> {
    count(label(this));
    const r = await real.admin('GET', '/admin/queue');
    const states = (r.json?.states ?? {}) as Record<string, number>;
    for (const s of ['queued', 'in-flight', 'deferred', 'hold', 'bouncing', 'bounced', 'dead-letter', 'incoming']) {
      const want = model.msgs.filter((m) => m.state === s).length;
      if ((states[s] ?? 0) !== want) fault(`status says ${states[s]} ${s}, the model ${want}`);
    }
    const byState = (r.json?.oldestByState ?? {}) as Record<string, number | null>;
    for (const st of ['queued', 'in-flight', 'deferred', 'hold', 'bouncing', 'bounced', 'dead-letter']) {
      const ms = model.msgs.filter((m) => m.state === st).map((m) => m.receivedAt);
      const want = ms.length === 0 ? null : Math.min(...ms);
      if ((byState[st] ?? null) !== want) fault(`status says the oldest ${st} arrived at ${byState[st]}, the model ${want}`);
    }
    {
      // "Oldest" is of the mail still owed (a delivery or a bounce): a health check's number.
      const ms = model.msgs.filter((m) => ['queued', 'in-flight', 'deferred', 'hold', 'bouncing'].includes(m.state)).map((m) => m.receivedAt);
      const want = ms.length === 0 ? null : Math.min(...ms);
      if ((r.json?.oldest ?? null) !== want) fault(`status says the oldest message owed arrived at ${r.json?.oldest}, the model ${want}`);
    }
    // The other shard's agents of the sequence before may still be closing: this shard's only.
    const agents = ((r.json?.agents ?? []) as { session: string; shard: number }[]).filter((a) => a.shard === real.shard).map((a) => a.session).sort();
    const want = [...model.agents.values()].map((a) => a.session).sort();
    if (agents.join() !== want.join()) fault(`status lists agents ${agents.join()}, the model ${want.join()}`);
  }
  toString(): string { return 'status()'; }
}

/** Clock steps: past a release delay, a retry, the age limit, retention, the dedupe window. */
const STEPS = [1_000, 2_500, CFG.affinityMs, CFG.firstRetryMs, CFG.firstRetryMs + 1, CFG.maxAgeMs, CFG.maxAgeMs + CFG.firstRetryMs, CFG.retentionMs + 1, CFG.dedupeWindowMs];

export class Clock implements Cmd {
  readonly ms: number;
  constructor(ms: number) { this.ms = ms; }
  check(): boolean { return true; }
  async run(model: Model, real: Real): Promise<void> {
    count(label(this));
    tick(model, this.ms);
    await real.clock(model.now);
    real.clockAt = model.now;
    await sync(model, real);
  }
  toString(): string { return `clock(+${this.ms} ms)`; }
}

class Recipients implements Cmd {
  readonly names: number;
  readonly parts: 1 | 2;
  constructor(names: number, parts: 1 | 2) { this.names = names; this.parts = parts; }
  check(m: Model): boolean { return m.agents.size > 0; }
  async run(model: Model, real: Real): Promise<void> {
    count(label(this));
    const a = [...real.agents.values()][0] ?? fault('no agent');
    const entries = real.rcpts.slice(0, this.names).sort();
    publish(a.raw, entries, this.parts);
    model.list = entries.length === 0 ? null : new Set(entries);
    await sync(model, real);
  }
  toString(): string { return `recipients(${this.names} names, ${this.parts} parts)`; }
}

/** One part of two of another list, and no second part (its connection may drop): the list in force stays. */
class RecipientsHalf implements Cmd {
  check(m: Model): boolean { return m.agents.size > 0; }
  async run(model: Model, real: Real): Promise<void> {
    count(label(this));
    const a = [...real.agents.values()][0] ?? fault('no agent');
    const entries = [...real.rcpts].sort();
    a.raw.send({ type: 'recipients', digest: sha256(entries.join('\n')), part: 0, parts: 2, delimiter: '', entries: entries.slice(0, 2) });
    await sync(model, real);
  }
  toString(): string { return 'recipients(half of a list)'; }
}

function publish(raw: { send(f: never): void }, entries: string[], parts: number): void {
  const digest = sha256(entries.join('\n'));
  const cut = Math.ceil(entries.length / parts);
  for (let p = 0; p < parts; p++) {
    (raw.send as (f: unknown) => void)({ type: 'recipients', digest, part: p, parts, delimiter: '', entries: entries.slice(p * cut, (p + 1) * cut) });
  }
}

export class Restart implements Cmd {
  check(): boolean { return true; }
  async run(model: Model, real: Real): Promise<void> {
    count(label(this));
    // The connections die with the runtime: the new object finds their leases (its constructor).
    real.clockAt = null;
    await real.w.rt.restart();
    for (const a of real.agents.values()) a.raw.ws.terminate();
    real.agents.clear();
    restart(model);
    await real.clock(model.now);  // the clock is the isolate's: set it again
    real.clockAt = model.now;
    await sync(model, real);
  }
  toString(): string { return 'restart()'; }
}

const agentName = fc.constantFrom('a', 'b');

export function commandArbitraries(): fc.Arbitrary<Cmd>[] {
  const size = fc.oneof({ weight: 20, arbitrary: fc.constant<Size>('small') }, { weight: 1, arbitrary: fc.constantFrom<Size>('head-1', 'head', 'head+1', 'large') });
  const resend = fc.oneof({ weight: 4, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.nat(20) });
  const weighted: [number, fc.Arbitrary<Cmd>][] = [
    [6, fc.tuple(fc.nat(3), fc.nat(2), size, resend).map(([r, s, z, d]) => new Ingest(r, s, z, d))],
    [3, fc.tuple(agentName, fc.integer({ min: 1, max: 3 }), fc.boolean()).map(([n, w, b]) => new Connect(n, w, b))],
    [1, agentName.map((n) => new Disconnect(n))],
    [8, fc.tuple(agentName, fc.nat(5), fc.constantFrom<Reply>('250', '250', '250', '451', '550', '550', '550', 'garbage', 'long', 'nack', 'lost', 'shutdown', 'steal', 'twice', 'foreign')).map(([n, k, r]) => new Answer(n, k, r))],
    [1, agentName.map((n) => new RetryAll(n))],
    [3, fc.tuple(agentName, fc.nat(5), fc.constantFrom('sent', 'sent', 'deferred', 'failed' as const)).map(([n, k, s]) => new Bounced(n, k, s))],
    [5, fc.tuple(fc.constantFrom<Op>('hold', 'release', 'delete', 'retry', 'replay', 'replay', 'purge', 'export'), fc.nat(20), fc.boolean()).map(([o, k, a]) => new Admin(o, k, a))],
    [1, fc.constant(new Flush())],
    [1, fc.constant(new Status())],
    [3, fc.constantFrom(...STEPS).map((ms) => new Clock(ms))],
    [1, fc.tuple(fc.constantFrom(0, 2, 3), fc.constantFrom<1 | 2>(1, 2)).map(([n, p]) => new Recipients(n, p))],
    [1, fc.constant(new RecipientsHalf())],
  ];
  // A restart costs a workerd restart (about a second): rare, and off where MODEL_RESTARTS=0.
  if (process.env.MODEL_RESTARTS !== '0') {
    weighted.push([1, fc.oneof({ weight: 1, arbitrary: fc.constant<Cmd>(new Restart()) }, { weight: 15, arbitrary: fc.constant<Cmd>(new Status()) })]);
  }
  return weighted.flatMap(([w, a]) => Array.from({ length: w }, () => a.map((c) => new Timed(c))));
}

class Timed implements Cmd {
  readonly inner: Cmd;
  constructor(inner: Cmd) { this.inner = inner; }
  check(m: Readonly<Model>): boolean { return this.inner.check(m); }
  async run(model: Model, real: Real): Promise<void> {
    const t0 = performance.now();
    try {
      await this.inner.run(model, real);
    } finally {
      const k = this.inner.constructor.name;
      timing.set(k, (timing.get(k) ?? 0) + performance.now() - t0);
    }
  }
  toString(): string { return String(this.inner); }
}

// ---- one sequence: a fresh shard, the commands, then quiescence ------------------------------

let clockBase = Date.UTC(2030, 0, 1);

function took(k: string, t0: number): void {
  timing.set(k, (timing.get(k) ?? 0) + performance.now() - t0);
}

export async function setupSequence(real: Real): Promise<Model> {
  let t0 = performance.now();
  // After a sequence that passed, its shard was emptied (finishSequence); after any other, clean up.
  if (real.dirty) await real.clean();
  real.dirty = true;
  took('setup: clean', t0);
  t0 = performance.now();
  real.seq++;
  real.shard = real.seq % SHARDS;
  real.rcpts = Real.addresses(real.shard);
  // The clock goes on from where the last sequence left it (set once, and after each restart).
  if (real.clockAt === null) {
    real.clockAt = clockBase;
    await real.clock(real.clockAt);
  }
  const model = newModel(real.clockAt);
  // The shard's meta as a fresh object has it, whatever the sequence before left (a sequence must
  // not depend on the one before it, or its replay would not be exact): no list in force, no
  // bounce relay announced.
  const a = await real.connect('setup', 1, false);
  publish(a.raw, [], 1);
  await real.barrier();
  real.agents.delete('setup');
  a.raw.ws.terminate();
  took('setup: clock and meta', t0);
  // Connections of an earlier sequence on this shard are gone (closed without waiting, finishSequence).
  await real.until(async () => !(((await real.admin('GET', '/admin/queue')).json?.agents ?? []) as { shard: number }[]).some((a) => a.shard === real.shard), 'the shard\'s old connections to close');
  if ((await real.rows()).length > 0 || (await real.bodyKeys()).length > 0) fault('the shard is not empty at the start');
  return model;
}

/** A sequence passed: its messages removed, its agents gone. */
async function finishSequence(model: Model, real: Real): Promise<void> {
  for (const m of model.msgs) {
    if (m.state === 'dead-letter' || m.state === 'bounced') await real.admin('DELETE', `/admin/messages/${m.id}`);
    else if (live(m)) await real.admin('POST', `/admin/messages/${m.id}/delete`);
  }
  for (const raw of real.opened) raw.ws.terminate();
  real.opened = [];
  real.agents.clear();
  real.clockAt = model.now;
  real.dirty = false;
}

/** A healthy agent and target from now on: everything must settle. */
export async function quiesce(model: Model, real: Real): Promise<void> {
  // Agents shutting down go (a real one closes after its shutdown nacks); one with a relay stays or comes.
  for (const a of [...model.agents.values()]) if (a.draining) await new Disconnect(a.name).run(model, real);
  if (![...model.agents.values()].some((a) => a.bounces)) {
    const name = model.agents.has('a') ? 'b' : 'a';
    if (model.agents.has(name)) await new Disconnect(name).run(model, real);
    await new Connect(name, 3, true).run(model, real);
  }
  for (let round = 0; round < 200; round++) {
    const leased = model.msgs.find((m) => m.lease !== null);
    if (leased) {
      if (leased.state === 'in-flight') await new Answer(leased.lease ?? '', 0, '250').run(model, real);
      else await new Bounced(leased.lease ?? '', 0, 'sent').run(model, real);
      continue;
    }
    const waiting = model.msgs.filter((m) => m.state === 'queued' || m.state === 'deferred' || m.state === 'bouncing');
    if (waiting.length === 0) break;
    // Due: past its next attempt and, for another agent, past its affinity.
    const next = Math.min(...waiting.map((m) => Math.max(m.notBefore, m.state === 'queued' ? m.affinityUntil : 0)));
    await new Clock(Math.max(1, next - model.now)).run(model, real);
  }
  const problems = model.msgs.flatMap(finalProblems);
  if (problems.length > 0) fault(`at quiescence: ${problems.join('; ')}`);
  await new Status().run(model, real);
}

export interface RunOptions { seed?: number; path?: string; replayPath?: string; numRuns: number; maxCommands: number; timeLimitMs?: number; log?: (line: string) => void }
export interface RunReport { ok: boolean; runs: number; seconds: number; message: string; seed: number; path: string | null }

export async function runModel(opts: RunOptions): Promise<RunReport> {
  const real = await Real.start();
  let runs = 0;
  const start = Date.now();
  try {
    // The budget stops new sequences, not the shrinking of a failure (fast-check's own time limit would).
    let failed = false;
    const prop = fc.asyncProperty(fc.commands(commandArbitraries(), { maxCommands: opts.maxCommands, size: 'max', ...(opts.replayPath === undefined ? {} : { replayPath: opts.replayPath }) }), async (cmds) => {
      if (!failed && opts.timeLimitMs !== undefined && Date.now() - start > opts.timeLimitMs) return;
      runs++;
      try {
        await sequence(cmds);
      } catch (err) {
        failed = true;
        throw err;
      }
    });
    const sequence = async (cmds: Iterable<Cmd>): Promise<void> => {
      const t0 = performance.now();
      const model = await setupSequence(real);
      timing.set('setup', (timing.get('setup') ?? 0) + performance.now() - t0);
      await fc.asyncModelRun(() => ({ model, real }), cmds);
      for (const m of model.msgs) count(`before quiescence: ${m.state}`);
      const t1 = performance.now();
      await quiesce(model, real);
      timing.set('quiesce', (timing.get('quiesce') ?? 0) + performance.now() - t1);
      for (const m of model.msgs) count(`settled: ${m.state}${m.lostReplies > 0 ? ' (lost reply)' : ''}`);
      const t2 = performance.now();
      await finishSequence(model, real);
      took('finish', t2);
      if (opts.log && runs % 50 === 0) opts.log(`${runs} sequences, ${((Date.now() - start) / 1000).toFixed(0)} s`);
    };
    const r = await fc.check(prop, {
      numRuns: opts.numRuns,
      ...(opts.seed === undefined ? {} : { seed: opts.seed }),
      ...(opts.path === undefined ? {} : { path: opts.path }),
    });
    const seconds = (Date.now() - start) / 1000;
    if (!r.failed) return { ok: true, runs, seconds, message: `${runs} sequences passed`, seed: r.seed, path: null };
    const cmds = r.counterexample?.[0];
    const replayPath = /replayPath="([^"]*)"/.exec(String(cmds))?.[1];
    const replay = `MODEL_SEED=${r.seed} MODEL_PATH=${r.counterexamplePath ?? ''}${replayPath ? ` MODEL_REPLAY='${replayPath}'` : ''} npm test -- test/model/queue.test.ts`;
    return {
      ok: false, runs, seconds, seed: r.seed, path: r.counterexamplePath,
      message: `model failure in sequence ${r.numRuns} (${runs} run with shrinking) (seed ${r.seed}, path ${r.counterexamplePath}):\n` +
        `  ${String(r.errorInstance instanceof Error ? r.errorInstance.message : r.errorInstance)}\n` +
        `  shrunk sequence: ${cmds ? String(cmds) : '?'}\n  replay: ${replay}`,
    };
  } finally {
    await real.stop();
  }
}

export { shardName, held };
