// One LMTP/SMTP connection: its socket, its capabilities and the queue of replies it still owes
// (nodemailer lib/smtp-connection). Every wait has a named state with its own timeout (Postfix
// smtp_proto.c). client.ts runs transactions over it.

import net from 'node:net';
import { isLocalError, localError, type LocalError } from './errors.ts';
import { ReplyReader } from './line-reader.ts';
import { replyText, type Reply } from './reply.ts';
import { formatTarget, type Target } from './target.ts';

export interface Timeouts { connect: number; greeting: number; command: number; dataBlock: number; final: number }

/** In a result's text when the message may be stored though no 2xx was read. */
export const MAY_BE_DELIVERED = '(the message may have been delivered)';

// Every wait has a state: its timeout, and what it waits for (for result texts and logs).
export const STATES = {
  CONNECT: { timeout: 'connect', what: 'connect' },
  GREETING: { timeout: 'greeting', what: 'the greeting' },
  HELLO: { timeout: 'command', what: 'LHLO/EHLO/HELO' },
  RSET: { timeout: 'command', what: 'RSET' },
  MAIL: { timeout: 'command', what: 'MAIL FROM' },
  RCPT: { timeout: 'command', what: 'RCPT TO' },
  DATA: { timeout: 'command', what: 'DATA' },
  BODY: { timeout: 'dataBlock', what: 'the message body' },
  BDAT: { timeout: 'command', what: 'BDAT' },
  // Postfix: "sending end of data -- message may be sent more than once".
  DOT: { timeout: 'final', what: `end of data ${MAY_BE_DELIVERED}` },
  QUIT: { timeout: 'command', what: 'QUIT' },
} as const satisfies Record<string, { timeout: keyof Timeouts; what: string }>;
export type State = keyof typeof STATES;
export type Answer = Reply | LocalError;  // what an expected reply resolves to; it never rejects

export interface Caps { pipelining: boolean; chunking: boolean; eightBitMime: boolean; smtpUtf8: boolean; size: boolean; enhanced: boolean }
const NO_CAPS: Caps = { pipelining: false, chunking: false, eightBitMime: false, smtpUtf8: false, size: false, enhanced: false };

/**
 * Hooks of an expected reply, run as replies are read (synchronously: several replies of one read
 * are matched before any promise settles). seen: this reply is in. owed: asked when the reply
 * would be next; false when the replies read so far mean the server will not send it.
 */
export interface Expected { seen?: (r: Reply) => void; owed?: () => boolean }
const NOT_OWED: LocalError = localError('EPROTOCOL', 'DONE', 'no reply owed');

export const isOk = (a: Answer): a is Reply => !isLocalError(a) && a.code >= 200 && a.code < 300;
export const noReply = (state: State): LocalError => localError('EPROTOCOL', state, 'no reply');

/** One connection and its queue of expected replies. Once failed, it stays failed. */
export class Session {
  readonly socket: net.Socket;
  readonly greeting: Promise<Answer>;
  failure: LocalError | null = null;
  /**
   * Since when the server has been known to wait for MAIL with no transaction open (after
   * LHLO, an answered RSET, or a transaction that ended with every reply read); null from
   * MAIL on until then, so a transaction that ends any other way leaves it null.
   */
  idleAt: number | null = null;
  /** Reused without an RSET: until MAIL is answered, nobody knows whether the server is still there. */
  unprobed = false;
  #caps: Caps = NO_CAPS;
  readonly #t: Timeouts;
  readonly #reader = new ReplyReader();
  #queue: (Expected & { state: State; resolve: (a: Answer) => void })[] = [];
  #timer: NodeJS.Timeout | undefined;

  static connect(target: Target, t: Timeouts): Promise<Session | LocalError> {
    return new Promise((resolve) => {
      const socket = 'path' in target ? net.connect(target.path) : net.connect(target.port, target.host);
      const onError = (e: Error): void => {
        clearTimeout(timer);
        resolve(localError('ECONNECTION', 'CONNECT', `${formatTarget(target)}: ${e.message}`));
      };
      const timer = setTimeout(() => {
        socket.destroy();
        resolve(localError('ETIMEDOUT', 'CONNECT', `could not connect to ${formatTarget(target)} within ${t.connect} ms`));
      }, t.connect);
      socket.once('error', onError).once('connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        resolve(new Session(socket, t));
      });
    });
  }

  constructor(socket: net.Socket, t: Timeouts) {
    this.socket = socket;
    this.#t = t;
    socket.setNoDelay(true);
    socket.on('data', (c: Buffer) => this.#onData(c));
    socket.on('error', (e) => this.#lost(e.message));
    socket.on('close', () => this.#lost('connection closed by the server'));
    this.greeting = this.expect('GREETING');  // queued before any byte can arrive
  }

  get caps(): Caps { return this.#caps; }
  set caps(c: Caps) { this.#caps = c; this.#reader.enhanced = c.enhanced; }

  expect(state: State, hooks: Expected = {}): Promise<Answer> {
    if (this.failure) return Promise.resolve(this.failure);
    return new Promise((resolve) => {
      this.#queue.push({ ...hooks, state, resolve });
      if (this.#queue.length === 1) this.#arm();
    });
  }

  /** Queues one expected reply per command, then sends them all in one write. */
  pipeline(cmds: readonly (readonly [State, string])[]): Promise<Answer>[] {
    const answers = cmds.map(([state]) => this.expect(state));
    if (!this.failure) this.socket.write(cmds.map(([, line]) => line + '\r\n').join(''));
    return answers;
  }

  command(state: State, line: string): Promise<Answer> {
    return this.pipeline([[state, line]])[0] ?? Promise.resolve(localError('EPROTOCOL', state, 'no command'));
  }

  /** Writes body bytes, waiting (at most dataBlock ms) for 'drain' so memory stays bounded. */
  write(data: Uint8Array): Promise<LocalError | null> {
    if (this.failure) return Promise.resolve(this.failure);
    if (this.socket.write(data)) return Promise.resolve(null);
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.socket.off('drain', done).off('close', done);
        resolve(this.failure);
      };
      const ms = this.#t.dataBlock;
      const timer = setTimeout(() => {
        this.fail(localError('ETIMEDOUT', 'BODY', `could not send ${STATES.BODY.what} within ${ms} ms`));
        done();
      }, ms);
      this.socket.on('drain', done).on('close', done);
    });
  }

  /** Ends the session: closes the socket and answers every expected reply with `e`. */
  fail(e: LocalError): LocalError {
    if (this.failure) return this.failure;
    this.failure = e;
    clearTimeout(this.#timer);
    this.socket.destroy();
    const queue = this.#queue;
    this.#queue = [];
    for (const p of queue) p.resolve(e);
    return e;
  }

  /** A reply that is not a valid answer to `state`: the session can no longer be trusted. */
  unexpected(state: State, a: Answer): LocalError {
    if (isLocalError(a)) return a;
    return this.fail(localError('EPROTOCOL', state, `unexpected reply to ${STATES[state].what}: ${a.code} ${replyText(a)}`));
  }

  async quit(): Promise<void> {
    if (!this.failure) await this.command('QUIT', 'QUIT');  // any answer will do
    const closed = new Promise<void>((r) => (this.socket.closed ? r() : this.socket.once('close', () => r())));
    this.fail(localError('ECONNECTION', 'QUIT', 'connection closed by the client'));
    await closed;
  }

  #lost(why: string): void {
    const head = this.#queue[0];
    const stage = head?.state ?? 'IDLE';
    this.fail(localError('ECONNECTION', stage, head ? `${why} while waiting for the reply to ${STATES[head.state].what}` : why));
  }

  // Replies that turned out not to be owed (see Expected.owed) leave the head of the queue.
  #dropUnowed(): void {
    while (this.#queue[0]?.owed?.() === false) this.#queue.shift()?.resolve(NOT_OWED);
  }

  #arm(): void {
    clearTimeout(this.#timer);
    this.#dropUnowed();
    const head = this.#queue[0];
    if (!head) return;
    const { timeout, what } = STATES[head.state];
    const ms = this.#t[timeout];
    this.#timer = setTimeout(() => this.fail(localError('ETIMEDOUT', head.state, `no reply to ${what} within ${ms} ms`)), ms);
  }

  #onData(chunk: Buffer): void {
    // Replies before a violation in the same chunk still count: an LMTP 250 is not thrown away.
    const { replies, error } = this.#reader.push(chunk);
    for (const r of replies) if (!this.failure) this.#dispatch(r);
    if (error) this.fail(localError('EPROTOCOL', this.#queue[0]?.state ?? 'IDLE', error));
  }

  #dispatch(reply: Reply): void {
    this.#dropUnowed();
    const head = this.#queue.shift();
    if (!head) {
      // RFC 5321 3.8: a server may announce 421 at any time before it closes; that is no violation.
      const closing = reply.code === 421;
      this.fail(localError(closing ? 'ECONNECTION' : 'EPROTOCOL', 'IDLE', `${closing ? 'server closing' : 'unexpected reply'}: ${reply.code} ${replyText(reply)}`));
      return;
    }
    head.seen?.(reply);
    head.resolve(reply);
    if (reply.code === 421) {
      // The server is going away: every reply still owed becomes this one.
      for (const p of this.#queue.splice(0)) p.resolve(reply);
      this.fail(localError('ECONNECTION', head.state, `server closing: 421 ${replyText(reply)}`));
      return;
    }
    this.#arm();
  }
}

export function parseCaps(hello: Reply): Caps {
  const caps = { ...NO_CAPS };
  for (const line of hello.lines.slice(1)) {
    const kw = line.trim().split(/\s+/)[0]?.toUpperCase();
    if (kw === 'PIPELINING') caps.pipelining = true;
    else if (kw === 'CHUNKING') caps.chunking = true;
    else if (kw === '8BITMIME') caps.eightBitMime = true;
    else if (kw === 'SMTPUTF8') caps.smtpUtf8 = true;
    else if (kw === 'SIZE') caps.size = true;
    else if (kw === 'ENHANCEDSTATUSCODES') caps.enhanced = true;
  }
  return caps;
}
