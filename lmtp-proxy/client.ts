// LMTP/SMTP client: transactions over a Session (session.ts), which matches replies to
// commands. SMTP and LMTP share one code path: the only difference is one final reply per
// accepted recipient (LMTP) instead of one for all of them.

import os from 'node:os';
import { dotStuffed } from './dot-stream.ts';
import { errorText, isLocalError, localError, type LocalError } from './errors.ts';
import { replyText } from './reply.ts';
import { isOk, MAY_BE_DELIVERED, noReply, parseCaps, Session, STATES, type Answer, type State, type Timeouts } from './session.ts';
import type { Target } from './target.ts';

export { MAY_BE_DELIVERED, type Timeouts } from './session.ts';

export interface Envelope { sender: string; recipients: string[] }  // sender '' = null reverse-path <>
/**
 * What one recipient's replies came to. The same shape as protocol/wire.ts's RecipientResult,
 * kept apart: lmtp-proxy imports nothing of ours, and the agent turns replies into results
 * (edge-agent/delivery/deliver.ts resultOf).
 */
export type ReplyOutcome = 'delivered' | 'tempfail' | 'permfail';
export interface RecipientReply { recipient: string; code: number; enhanced: string | null; text: string; outcome: ReplyOutcome }
export type Extension = 'PIPELINING' | 'CHUNKING' | '8BITMIME' | 'SMTPUTF8' | 'SIZE';
export interface DeliverInfo {
  /** Body size in bytes, for SIZE= when offered. */
  size?: number;
  /** The body has 8-bit bytes: BODY=8BITMIME when offered. */
  eightBit?: boolean;
  /**
   * Called with each recipient's final reply after the body, as it arrives (LMTP answers one
   * recipient at a time): a caller can record "stored for this one" before the server has
   * answered for the next, so a crash in between cannot make it deliver that one twice.
   */
  onFinal?: (result: RecipientReply) => void;
}

export interface ClientOptions {
  localName?: string;
  timeouts?: Partial<Timeouts>;
  /** Extensions not to use even when offered: a workaround for a peer that handles one badly. */
  disable?: readonly Extension[];
  /** A kept connection idle longer than this is probed with RSET before its next MAIL (ms). */
  probeAfterMs?: number;
  /**
   * Body bytes gathered into one BDAT (default BDAT_CHUNK, 1 MiB). The client holds up to this
   * much of the body (plus one piece of it) while the previous chunk is answered: a client
   * with many messages in flight and little memory (the agent) asks for less.
   */
  bdatChunkBytes?: number;
}

// RFC 5321 4.5.3.2, in ms. dataBlock bounds each wait for the socket to drain while sending.
export const DEFAULT_TIMEOUTS: Timeouts = { connect: 30_000, greeting: 300_000, command: 300_000, dataBlock: 180_000, final: 600_000 };

const BDAT_CHUNK = 1024 * 1024;    // coalesce body chunks up to this before sending a BDAT (bdatChunkBytes)
const ONE_WRITE = 64 * 1024;       // a BDAT this small goes out with its command in one write
// A connection idle for longer may have been dropped by the server (Dovecot after minutes, a
// proxy sooner): it is probed with RSET before the next MAIL. A fresher one is used as it is.
export const PROBE_AFTER_MS = 10_000;
const BAD_ADDRESS = /[\x00-\x1f\x7f<>]/;
const NON_ASCII = /[^\x00-\x7f]/;

function result(recipient: string, a: Answer): RecipientReply {
  if (isLocalError(a)) return { recipient, code: 0, enhanced: null, text: errorText(a), outcome: 'tempfail' };
  const outcome = a.code < 300 ? 'delivered' : a.code >= 500 ? 'permfail' : 'tempfail';
  return { recipient, code: a.code, enhanced: a.enhanced, text: replyText(a), outcome };
}

const bodyFailed = (e: unknown): LocalError =>
  localError('ESTREAM', 'BODY', `reading the message body failed: ${e instanceof Error ? e.message : String(e)}`);

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> { yield b; }

/** The body in one piece if it has at most `limit` bytes; else what was read, and the rest, as one stream. */
async function readUpTo(body: AsyncIterable<Uint8Array>, limit: number): Promise<{ whole: Uint8Array } | { rest: AsyncIterable<Uint8Array> } | LocalError> {
  const it = body[Symbol.asyncIterator]();
  const parts: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const r = await it.next();
      if (r.done) return { whole: parts.length === 1 && parts[0] ? parts[0] : Buffer.concat(parts) };
      parts.push(r.value);
      size += r.value.byteLength;
      if (size > limit) break;
    }
  } catch (e) {
    return bodyFailed(e);
  }
  return { rest: (async function* () {
    yield* parts;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
  })() };
}

function checkAddress(what: string, a: unknown, allowEmpty: boolean): void {
  if (typeof a !== 'string' || (!allowEmpty && a === '') || BAD_ADDRESS.test(a)) {
    throw new TypeError(`invalid ${what} ${JSON.stringify(a)}: must be a string without CR, LF, NUL, control characters, '<' or '>'`);
  }
}

export class LmtpClient {
  readonly target: Target;
  readonly #t: Timeouts;
  readonly #localName: string;
  readonly #disable: ReadonlySet<Extension>;
  readonly #probeAfterMs: number;
  readonly #bdatChunk: number;
  #session: Session | null = null;
  #chain: Promise<unknown> = Promise.resolve();  // serializes deliver() and close()

  constructor(target: Target, options: ClientOptions = {}) {
    this.target = target;
    this.#t = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.#disable = new Set(options.disable ?? []);
    this.#probeAfterMs = options.probeAfterMs ?? PROBE_AFTER_MS;
    this.#bdatChunk = options.bdatChunkBytes ?? BDAT_CHUNK;
    if (!Number.isSafeInteger(this.#bdatChunk) || this.#bdatChunk < 1) throw new TypeError(`invalid bdatChunkBytes ${this.#bdatChunk}`);
    const host = os.hostname();
    this.#localName = options.localName ?? (/^[A-Za-z0-9.-]+$/.test(host) ? host : 'localhost');
    if (!/^(?:[A-Za-z0-9.-]+|\[[0-9A-Za-z:.]+\])$/.test(this.#localName)) {
      throw new TypeError(`invalid localName ${JSON.stringify(this.#localName)}: expected a domain or an address literal`);
    }
  }

  /**
   * Delivers one message: exactly one result per envelope recipient, in envelope order.
   * Network and protocol outcomes are results; a bad address rejects with a TypeError
   * before anything is queued or sent. The body is read only once a recipient is accepted,
   * except a small one (info.size ≤ ONE_WRITE) that goes out with the envelope (#transact).
   */
  async deliver(envelope: Envelope, body: AsyncIterable<Uint8Array>, info: DeliverInfo = {}): Promise<RecipientReply[]> {
    checkAddress('sender', envelope.sender, true);
    for (const r of envelope.recipients) checkAddress('recipient', r, false);
    if (envelope.recipients.length === 0) return [];
    const run = this.#chain.then(() => this.#transact(envelope, body, info));
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /** QUIT if connected, then close the socket. Waits for deliveries already queued. */
  close(): Promise<void> {
    const run = this.#chain.then(async () => {
      const s = this.#session;
      this.#session = null;
      await s?.quit();
    });
    this.#chain = run.catch(() => undefined);
    return run;
  }

  async #transact(env: Envelope, given: AsyncIterable<Uint8Array> | Uint8Array, info: DeliverInfo, retry = true): Promise<RecipientReply[]> {
    // An address given twice gets one RCPT (and so one LMTP reply) and shares its result.
    let rcpts = [...new Set(env.recipients)];
    const results = new Map<string, RecipientReply>();
    const settle = (rs: readonly string[], a: Answer): void => {
      for (const r of rs) if (!results.has(r)) results.set(r, result(r, a));
    };
    const done = (): RecipientReply[] =>
      env.recipients.map((r) => results.get(r) ?? result(r, localError('EPROTOCOL', 'DONE', 'no reply for this recipient')));

    const s = await this.#ready();
    if (!(s instanceof Session)) {
      // A refused session (5xx greeting or LHLO) says nothing about this message, and a mail
      // server that refuses its own relay is misconfigured: retry later, as Postfix does with
      // smtp_skip_5xx_greeting, rather than fail the recipients for good.
      for (const r of rcpts) results.set(r, { ...result(r, s), outcome: 'tempfail' });
      return done();
    }
    // A transaction that ended with every reply read: the server waits for MAIL from now on.
    const idle = (): RecipientReply[] => { s.idleAt = performance.now(); return done(); };
    // A refusal is a 4xx/5xx reply or a local error; anything else there breaks the protocol.
    const refusal = (state: State, a: Answer): Answer => (isLocalError(a) || a.code >= 400 ? a : s.unexpected(state, a));

    const { caps } = s;
    // RFC 6531 3.4: a UTF-8 address must not go to a server that does not offer SMTPUTF8 (Dovecot
    // 2.3 would misread it, even as the null sender). Refuse it for good, never rewrite it.
    // Nothing is sent then: the session stays as it was, and as long idle.
    if (!caps.smtpUtf8) {
      const refuse = (r: string, whose: string): void => {
        results.set(r, { recipient: r, code: 553, enhanced: '5.6.7', outcome: 'permfail',
          text: `${whose} needs SMTPUTF8, which the destination does not offer (RFC 6531)` });
      };
      if (NON_ASCII.test(env.sender)) {
        for (const r of rcpts) refuse(r, 'the sender address');
        return done();
      }
      for (const r of rcpts) if (NON_ASCII.test(r)) refuse(r, 'this address');
      rcpts = rcpts.filter((r) => !results.has(r));
      if (rcpts.length === 0) return done();
    }
    let mail = `MAIL FROM:<${env.sender}>`;
    if (caps.eightBitMime && info.eightBit) mail += ' BODY=8BITMIME';
    if (caps.size && info.size !== undefined && Number.isSafeInteger(info.size) && info.size >= 0) mail += ` SIZE=${info.size}`;
    if (caps.smtpUtf8 && [env.sender, ...rcpts].some((a) => NON_ASCII.test(a))) mail += ' SMTPUTF8';
    const useData = !caps.chunking;
    const lmtp = this.target.protocol === 'lmtp';

    // A small body goes out with its envelope when the server pipelines and takes BDAT: MAIL,
    // every RCPT and BDAT LAST with the body in one write (RFC 2920, RFC 3030 4.2), one round
    // trip and one wake-up on each side fewer. It is read first, before anything is sent; a
    // server that refuses the transaction reads the chunk and discards it (RFC 3030 2).
    // A retry (below) brings the bytes it read already.
    const oneWrite = caps.pipelining && !useData;
    let body = given instanceof Uint8Array ? once(given) : given;
    let whole = oneWrite && given instanceof Uint8Array ? given : null;
    if (oneWrite && !whole && info.size !== undefined && info.size <= ONE_WRITE) {
      const read = await readUpTo(body, ONE_WRITE);
      if (isLocalError(read)) {
        settle(rcpts, read);  // nothing sent: the session is as it was
        return done();
      }
      if ('whole' in read) whole = read.whole;
      else body = read.rest;  // larger than it said: the usual way
    }
    s.idleAt = null;  // a transaction is open until every reply to it has been read

    // Envelope: with PIPELINING, MAIL + every RCPT (+ DATA, or BDAT LAST and a small body) in
    // one write; otherwise step by step.
    let mailA: Answer;
    let rcptA: Answer[] = [];
    let dataA: Answer | null = null;
    let sent: Promise<Answer>[] | null = null;  // the final replies, when the body went with the envelope
    if (whole) {
      // How many final replies come depends on the RCPT replies before them: one per accepted
      // recipient (LMTP), or one refusal when none was; one for all (SMTP). Replies of one read
      // are matched in order before any promise settles, hence the hooks.
      let mailOk = false;
      let acceptedN = 0;
      const mailP = s.expect('MAIL', { seen: (r) => { mailOk = isOk(r); } });
      const rcptP = rcpts.map(() => s.expect('RCPT', { seen: (r) => { if (mailOk && isOk(r)) acceptedN++; } }));
      sent = Array.from({ length: lmtp ? rcpts.length : 1 }, (_, i) => s.expect('DOT', { owed: () => i < Math.max(1, acceptedN) }));
      const lines = [mail, ...rcpts.map((r) => `RCPT TO:<${r}>`), `BDAT ${whole.byteLength} LAST`].join('\r\n') + '\r\n';
      await s.write(Buffer.concat([Buffer.from(lines), whole]));  // a failure answers every reply above
      [mailA, ...rcptA] = await Promise.all([mailP, ...rcptP]);
    } else if (caps.pipelining) {
      const cmds: [State, string][] = [['MAIL', mail], ...rcpts.map((r): [State, string] => ['RCPT', `RCPT TO:<${r}>`])];
      if (useData) cmds.push(['DATA', 'DATA']);
      const all = await Promise.all(s.pipeline(cmds));
      mailA = all[0] ?? noReply('MAIL');
      rcptA = all.slice(1, 1 + rcpts.length);
      dataA = useData ? (all[all.length - 1] ?? null) : null;
    } else {
      mailA = await s.command('MAIL', mail);
      if (isOk(mailA)) for (const r of rcpts) rcptA.push(await s.command('RCPT', `RCPT TO:<${r}>`));
      if (useData && rcptA.some(isOk)) dataA = await s.command('DATA', 'DATA');
    }
    // A reused connection that was gone before MAIL was answered (closed, or 421 as the server
    // timed it out): no body was sent, so nothing can have been accepted. Once more, on a new one.
    const gone = isLocalError(mailA) ? mailA.code === 'ECONNECTION' : mailA.code === 421;
    if (s.unprobed && gone && retry) {
      s.fail(localError('ECONNECTION', 'MAIL', 'reused connection was closed'));
      return this.#transact(env, whole ?? body, info, false);
    }
    s.unprobed = false;

    const accepted: string[] = [];
    if (!isOk(mailA)) settle(rcpts, refusal('MAIL', mailA));
    else {
      for (const [i, r] of rcpts.entries()) {
        const a = rcptA[i] ?? noReply('RCPT');
        if (isOk(a)) accepted.push(r);
        else settle([r], refusal('RCPT', a));
      }
    }
    const dataOpen = dataA !== null && !isLocalError(dataA) && dataA.code === 354;
    if (accepted.length === 0 && sent) {
      // The one reply to BDAT LAST then must be a refusal; RSET as below, then the server is ready.
      const a = (await sent[0]) ?? noReply('BDAT');
      if (!isLocalError(a) && a.code < 400) s.unexpected('BDAT', a);
    }
    if (accepted.length === 0) {
      // Nothing to deliver: never send the body. A 354 here means the server is waiting
      // for a message we will not send, so the connection is dropped instead of RSET.
      if (dataOpen) s.fail(localError('EPROTOCOL', 'DATA', '354 to DATA without an accepted recipient'));
      else if (!s.failure && !isOk(await s.command('RSET', 'RSET'))) s.fail(localError('EPROTOCOL', 'RSET', 'RSET refused'));
      return s.failure ? done() : idle();
    }
    if (useData && !dataOpen) {
      settle(accepted, refusal('DATA', dataA ?? noReply('DATA')));
      return done();
    }

    // Body, then the final replies: one per accepted recipient (LMTP) or one for all (SMTP),
    // matched by position. Only a 2xx here, never an earlier one, makes a recipient delivered.
    const count = lmtp ? accepted.length : 1;
    const finals = sent ?? (useData ? await this.#sendData(s, body, count) : await this.#sendBdat(s, body, count));
    if (!Array.isArray(finals)) {
      settle(accepted, isLocalError(finals) ? finals : refusal('BDAT', finals));
      return done();
    }
    for (const [i, r] of accepted.entries()) {
      const a = (await finals[lmtp ? i : 0]) ?? noReply('DOT');
      settle([r], isOk(a) ? a : refusal('DOT', a));
      // After the final dot only a 2xx, 4xx or 5xx reply says what became of the message. A
      // 421 (the server going away), a timeout, a lost connection, a line that is no reply or
      // a reply of the wrong kind leave it unknown: it may have been stored already. Such a
      // result is a tempfail, and its text says so, so that a later duplicate is explained.
      // A server's reply (a 421) may be long: the note goes before its text, where no cut to
      // the wire's limits (protocol/wire.ts wireResults) can take it off. Our own texts are
      // short or carry the note early (STATES.DOT), so it follows them.
      const got = results.get(r);
      const unknown = isLocalError(a) || a.code === 421 || (a.code < 400 && !isOk(a));
      if (got && unknown && !got.text.includes(MAY_BE_DELIVERED)) got.text = got.code === 0 ? `${got.text} ${MAY_BE_DELIVERED}` : `${MAY_BE_DELIVERED} ${got.text}`;
      if (got && got.outcome !== 'tempfail') info.onFinal?.(got);
    }
    // Every final reply is in: the transaction is over and the server ready for the next MAIL.
    return s.failure ? done() : idle();
  }

  // A connection ready for MAIL: the kept one as it is when it has been idle briefly since a
  // clean end (RFC 5321 4.1.4: the server is back in its initial state; no RSET round trip),
  // else the kept one if it answers RSET, else a new one.
  async #ready(): Promise<Session | Answer> {
    const old = this.#session;
    this.#session = null;
    if (old && !old.failure) {
      const { idleAt } = old;
      old.unprobed = idleAt !== null && performance.now() - idleAt < this.#probeAfterMs;
      if (old.unprobed) return (this.#session = old);
      if (isOk(await old.command('RSET', 'RSET'))) {
        old.idleAt = performance.now();
        return (this.#session = old);
      }
      old.fail(localError('ECONNECTION', 'RSET', 'RSET failed, reconnecting'));
    }
    const s = await Session.connect(this.target, this.#t);
    if (isLocalError(s)) return s;
    const refused = (state: State, a: Answer): Answer => (isLocalError(a) ? a : a.code >= 400 ? (s.fail(localError('ECONNECTION', state, 'refused')), a) : s.unexpected(state, a));
    const greeting = await s.greeting;
    if (isLocalError(greeting) || greeting.code !== 220) return refused('GREETING', greeting);
    let hello = await s.command('HELLO', `${this.target.protocol === 'lmtp' ? 'LHLO' : 'EHLO'} ${this.#localName}`);
    // RFC 5321 3.2: an SMTP server that does not know EHLO gets HELO (and no extensions).
    const helo = this.target.protocol === 'smtp' && !isLocalError(hello) && hello.code >= 500;
    if (helo) hello = await s.command('HELLO', `HELO ${this.#localName}`);
    if (!isOk(hello)) return refused('HELLO', hello);
    if (!helo) {
      const c = parseCaps(hello);
      const off = this.#disable;
      s.caps = {
        ...c, pipelining: c.pipelining && !off.has('PIPELINING'), chunking: c.chunking && !off.has('CHUNKING'),
        eightBitMime: c.eightBitMime && !off.has('8BITMIME'), smtpUtf8: c.smtpUtf8 && !off.has('SMTPUTF8'), size: c.size && !off.has('SIZE'),
      };
    }
    s.idleAt = performance.now();
    return (this.#session = s);
  }

  // DATA body with dot-stuffing. Returns the expected final replies, or why it stopped.
  async #sendData(s: Session, body: AsyncIterable<Uint8Array>, count: number): Promise<Promise<Answer>[] | LocalError> {
    let finals: Promise<Answer>[] = [];
    try {
      let prev: Uint8Array | null = null;
      // Hold one chunk back: the last one carries the terminator, and the final replies
      // are queued just before it is written.
      for await (const chunk of dotStuffed(body)) {
        if (prev) { const e = await s.write(prev); if (e) return e; }
        prev = chunk;
      }
      finals = Array.from({ length: count }, () => s.expect('DOT'));
      if (prev) { const e = await s.write(prev); if (e) return e; }
    } catch (e) {
      // Never send the final dot after a body that broke off: a truncated message would be delivered.
      return s.fail(bodyFailed(e));
    }
    return finals;
  }

  // RFC 3030 BDAT: no stuffing, nothing added. At most one chunk's reply is outstanding
  // while the next chunk is read, so this works with and without PIPELINING.
  async #sendBdat(s: Session, body: AsyncIterable<Uint8Array>, count: number): Promise<Promise<Answer>[] | Answer> {
    let parts: Uint8Array[] = [];
    let size = 0;
    let pending: Promise<Answer> | null = null;
    const send = async (last: boolean): Promise<Promise<Answer>[] | Answer | null> => {
      if (pending) {
        const a = await pending;
        pending = null;
        if (!isOk(a)) return a;  // the caller sorts a refusal from a protocol error
      }
      const answers = last ? Array.from({ length: count }, () => s.expect('DOT')) : [s.expect('BDAT')];
      const command = Buffer.from(`BDAT ${size}${last ? ' LAST' : ''}\r\n`);
      // A small message (the usual case) costs one write and one read on the server, not several.
      const writes = size <= ONE_WRITE ? [Buffer.concat([command, ...parts])] : [command, ...parts];
      let e: LocalError | null = null;
      for (const w of writes) if (!e) e = await s.write(w);
      parts = [];
      size = 0;
      if (e) return e;
      if (last) return answers;
      pending = answers[0] ?? null;
      return null;
    };
    try {
      for await (const chunk of body) {
        if (chunk.byteLength === 0) continue;
        parts.push(chunk);
        size += chunk.byteLength;
        if (size >= this.#bdatChunk) { const r = await send(false); if (r) return r; }
      }
    } catch (e) {
      return s.fail(bodyFailed(e));
    }
    return (await send(true)) ?? noReply('BDAT');
  }
}
