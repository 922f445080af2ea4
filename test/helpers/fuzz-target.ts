// A fuzzing LMTP target (#16): every reply is legal but drawn from a seeded PRNG: long and
// many-line replies, unusual codes, enhanced codes present, absent or of the wrong class,
// replies dribbled a few bytes at a time, disconnects at every step of the dialogue, 4xx/5xx
// mixes per recipient; CHUNKING half the time (BDAT pipelined behind MAIL and RCPT, refused
// chunks read and discarded as RFC 3030 says). It records what it stored, per message id (from
// our trace header) and
// recipient, and whether the client can have known: a copy stored but then not answered with a
// clean 2xx (dropped, garbled, 421 after the dot) is "ambiguous", the one kind of copy a second
// delivery may legitimately follow.
import { createHash } from 'node:crypto';
import net from 'node:net';
import { splitTrace } from './mail.ts';
import { LmtpInput } from './lmtp-input.ts';
import { prng } from './prng.ts';

/** Where in the dialogue a connection was dropped or garbled. */
export const FAULTS = ['greeting', 'lhlo', 'mail', 'rcpt', 'data', 'mid-body', 'after-dot', 'garble-after-dot', '421-after-dot'] as const;
export type Fault = (typeof FAULTS)[number];

export interface StoredCopy {
  /** Answered with a 2xx the client could read; false: stored, then dropped/garbled/421. */
  clear: boolean;
  /** SHA-256 of the stored bytes after our trace header. */
  sha256: string;
}

export interface FuzzTarget {
  port: number;
  url: string;
  /** Copies by `${id} ${recipient}`; id from the trace header ('?' when there was none). */
  copies: Map<string, StoredCopy[]>;
  /** How often each fault was injected. */
  faults: Record<Fault, number>;
  connections: number;
  /** Faults off: every reply a plain, quick success (to let the queue drain). */
  calm: boolean;
  close(): Promise<void>;
}

export interface FuzzOptions {
  /** Chance, per step of a connection's dialogue, of a disconnect or garble there (default 0.04). */
  faultRate?: number;
  /** Chance of a 4xx/5xx instead of a 2xx where one is legal (default 0.15). */
  failRate?: number;
  /** Chance that a reply is dribbled a few bytes at a time (default 0.1). */
  slowRate?: number;
}

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

/** Reply text: usually short, sometimes up to 500 characters of printable ASCII. */
function text(r: Rand): string {
  const n = r() < 0.8 ? 1 + Math.floor(r() * 40) : 1 + Math.floor(r() * 500);
  let s = '';
  for (let i = 0; i < n; i++) s += String.fromCharCode(0x20 + Math.floor(r() * 95));
  return s.trim() === '' ? 'ok' : s;
}

/** A legal reply: code, maybe an enhanced code (sometimes of another class), 1 line or up to 50. */
export function reply(r: Rand, code: number): string {
  const cls = String(code)[0] ?? '2';
  const e = r();
  const enhanced = e < 0.5 ? `${cls}.${Math.floor(r() * 8)}.${Math.floor(r() * 8)} ` : e < 0.6 ? `${pick(r, ['2', '4', '5'])}.0.0 ` : '';
  const lines = r() < 0.85 ? 1 : 2 + Math.floor(r() * 49);
  const out: string[] = [];
  for (let i = 0; i < lines; i++) out.push(`${code}${i === lines - 1 ? ' ' : '-'}${i === 0 ? enhanced : ''}${text(r)}`);
  return out.join('\r\n') + '\r\n';
}

const TEMP = [450, 451, 452, 455] as const;
const PERM = [550, 551, 552, 553, 554, 555] as const;

export async function startFuzzTarget(seed: number, opts: FuzzOptions = {}): Promise<FuzzTarget> {
  const faultRate = opts.faultRate ?? 0.04;
  const failRate = opts.failRate ?? 0.15;
  const slowRate = opts.slowRate ?? 0.1;
  const sockets = new Set<net.Socket>();
  const faults = Object.fromEntries(FAULTS.map((f) => [f, 0])) as Record<Fault, number>;
  const copies = new Map<string, StoredCopy[]>();

  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    // One generator per connection: the mix is the seed's, whatever order connections come in.
    const r = prng(seed * 7919 + target.connections++);
    const calm = target.calm;
    const fault = (where: Fault): boolean => {
      if (calm || r() >= faultRate) return false;
      faults[where]++;
      return true;
    };
    const fails = (): boolean => !calm && r() < failRate;
    let dead = false;
    /** A drop is queued: later (pipelined) commands get no answer. */
    let closing = false;
    /** The body is cut at its first bytes (a disconnect mid-body). */
    let cutBody = false;
    // Replies go out in order, each after the one before was written (slow ones take a while).
    let chain: Promise<void> = Promise.resolve();
    const write = (s: string): Promise<void> => new Promise((res) => {
      if (dead || socket.destroyed) return res();
      socket.write(s, () => res());
    });
    const send = (s: string): void => {
      const slow = !calm && r() < slowRate;
      const step = s.length < 200 ? 1 + Math.floor(r() * 7) : Math.ceil(s.length / 20);
      chain = chain.then(async () => {
        if (!slow) return write(s);
        for (let i = 0; i < s.length; i += step) {
          await write(s.slice(i, i + step));
          await sleep(Math.floor(r() * 3));
        }
      });
    };
    // A drop after replies were written: end() flushes them first, so a 250 sent is a 250 read.
    const drop = (): void => {
      closing = true;
      chain = chain.then(() => {
        dead = true;
        socket.end();
        setTimeout(() => socket.destroy(), 200).unref();
      });
    };
    const abort = (): void => {
      dead = true;
      socket.destroy();
    };

    let rcpts: string[] = [];
    let mailOk = false;
    const command = (line: string): boolean => {
      if (dead || closing) return false;
      const verb = line.slice(0, 4).toUpperCase();
      if (verb === 'LHLO') {
        if (fault('lhlo')) return drop(), false;
        const ext = ['8BITMIME', ...(r() < 0.5 ? ['ENHANCEDSTATUSCODES'] : []), ...(r() < 0.5 ? ['PIPELINING'] : []), ...(r() < 0.3 ? ['SIZE 100000000'] : []), ...(r() < 0.5 ? ['CHUNKING'] : [])];
        const extra = Array.from({ length: Math.floor(r() * 5) }, () => `X-${Math.floor(r() * 1e6)} ${text(r).replace(/ .*/, '')}`);
        const lines = [`fuzz.test ${text(r)}`, ...extra, ...ext];
        send(lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}`).join('\r\n') + '\r\n');
      } else if (verb === 'MAIL') {
        rcpts = [];
        chunks = [];
        if (fault('mail')) return drop(), false;
        const code = fails() ? pick(r, [...TEMP, 421, ...PERM]) : 250;
        mailOk = code === 250;
        send(reply(r, code));
        if (code === 421) drop();  // 421: the server closes the channel
      } else if (verb === 'RCPT') {
        if (fault('rcpt')) return drop(), false;
        if (!mailOk) return send(reply(r, 503)), false;
        const to = /<([^>]*)>/.exec(line)?.[1] ?? '';
        const code = fails() ? pick(r, [...TEMP, ...PERM]) : pick(r, [250, 250, 250, 251, 252]);
        if (code < 300) rcpts.push(to);
        send(reply(r, code));
      } else if (verb === 'DATA') {
        if (fault('data')) return drop(), false;
        if (rcpts.length === 0) return send(reply(r, 503)), false;
        mailOk = false;
        if (fails()) {
          rcpts = [];
          send(reply(r, pick(r, [451, 554])));
          return false;
        }
        send(`354 ${text(r)}\r\n`);
        cutBody = fault('mid-body');
        return true;
      } else if (verb === 'RSET' || verb === 'NOOP') {
        if (verb === 'RSET') {
          rcpts = [];
          mailOk = false;
          chunks = [];
        }
        send(reply(r, 250));
      } else if (verb === 'QUIT') {
        send('221 2.0.0 Bye\r\n');
        chain = chain.then(() => { socket.end(); });
      } else send(reply(r, 500));
      return false;
    };

    const body = (stored: Buffer): void => {
      if (dead) return;
      const trace = splitTrace(stored);
      const id = trace?.id ?? '?';
      const sha256 = createHash('sha256').update(trace?.rest ?? stored).digest('hex');
      const accepted = rcpts;
      rcpts = [];
      for (const rcpt of accepted) {
        const key = `${id} ${rcpt}`;
        const keep = (clear: boolean): void => { copies.set(key, [...(copies.get(key) ?? []), { clear, sha256 }]); };
        // Before this recipient's reply: drop (stored or not, the client cannot tell), a line
        // that is no reply, or a 421; the rest of the recipients get nothing.
        if (fault('after-dot')) {
          if (r() < 0.5) keep(false);
          return drop();
        }
        if (fault('garble-after-dot')) {
          if (r() < 0.5) keep(false);
          send(pick(r, ['hello there\r\n', '2500 ok\r\n', '354 go on\r\n', '250-more\r\n452 mixed\r\n']));
          return drop();
        }
        if (fault('421-after-dot')) {
          if (r() < 0.5) keep(false);
          send(reply(r, 421));
          return drop();
        }
        if (fails()) send(reply(r, pick(r, [...TEMP, ...PERM])));
        else {
          keep(true);
          send(reply(r, pick(r, [250, 250, 251, 252])));
        }
      }
    };

    // BDAT: chunks are kept until LAST, as Dovecot does; a refused chunk ends the transaction.
    let chunks: Buffer[] = [];
    const chunk = (data: Buffer, last: boolean): void => {
      if (dead || closing) return;
      if (fault('mid-body')) return abort();
      if (!mailOk) return send(reply(r, 503));
      if (rcpts.length === 0) return send(reply(r, pick(r, [503, 554])));
      if (fails()) {
        rcpts = [];
        mailOk = false;
        chunks = [];
        return send(reply(r, pick(r, [451, 452, 552, 554])));
      }
      chunks.push(data);
      if (!last) return send(reply(r, 250));
      mailOk = false;
      const all = Buffer.concat(chunks);
      chunks = [];
      body(all);
    };

    const input = new LmtpInput(command, body, chunk);
    socket.on('data', (chunk: Buffer) => {
      if (dead) return;
      // The body's first bytes arrived (the client waits for 354 before sending any): cut here.
      if (cutBody) return abort();
      input.push(chunk);
    });
    if (fault('greeting')) return abort();
    send(r() < 0.1 ? reply(r, 220) : '220 fuzz.test LMTP\r\n');
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as net.AddressInfo).port;
  const target: FuzzTarget = {
    port,
    url: `lmtp://127.0.0.1:${port}`,
    copies,
    faults,
    connections: 0,
    calm: false,
    close: () => new Promise((res) => {
      for (const s of sockets) s.destroy();
      server.close(() => res());
    }),
  };
  return target;
}
