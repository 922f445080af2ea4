// An LMTP/SMTP server whose every answer comes from a plan, for the model-based test of our
// client (client-model.test.ts). It is a real state machine over a socket (commands in the order
// they arrive, pipelined or not; BDAT chunks read whole whatever the answer, RFC 3030), it stores
// what it accepted, and it logs each transaction: what it answered, for whom, and what it stored.
import net from 'node:net';
import { LmtpInput } from '../helpers/lmtp-input.ts';

/** How a connection behaves: what it offers, and how its replies are cut into writes. */
export interface ConnPlan { pipelining: boolean; chunking: boolean; enhanced: boolean; writes: 'each' | 'together' | 'dribble' }
/** What one transaction (one MAIL) gets. Codes repeat when there are more RCPTs than entries. */
export interface TxPlan {
  mail: 250 | 451 | 550 | 421 | 'drop';
  rcpt: number[];
  /** One per accepted recipient, in order. */
  final: number[];
  /** After the body, the server goes away after this many final replies (drop, or a 421). */
  fault: null | { after: number; how: 'drop' | '421'; storeUnanswered: boolean };
}
const PLAIN_CONN: ConnPlan = { pipelining: true, chunking: true, enhanced: true, writes: 'each' };
const PLAIN_TX: TxPlan = { mail: 250, rcpt: [250], final: [250], fault: null };

export interface TxLog {
  conn: number;
  /** null: the connection was dropped instead. */
  mailReply: number | null;
  rcpts: { address: string; reply: number }[];
  /** Per accepted recipient: its final reply, null when the server went away before it. */
  finals: { address: string; reply: number | null }[];
  stored: string[];
  /** The body, once it arrived whole (the final dot, or the BDAT LAST chunk). */
  body: Buffer | null;
  /** How the server went away after the body, before some final replies. */
  wentAway: 'drop' | '421' | null;
}

export interface PlannedServer {
  port: number;
  log: TxLog[];
  connections: number;
  /** Plans still to be taken, in order; when empty, PLAIN_CONN / PLAIN_TX. */
  conns: ConnPlan[];
  txs: TxPlan[];
  close(): Promise<void>;
}

const enhanced = (code: number): string => `${Math.floor(code / 100)}.0.0 `;

export async function startPlannedServer(): Promise<PlannedServer> {
  const sockets = new Set<net.Socket>();
  const srv: PlannedServer = { port: 0, log: [], connections: 0, conns: [], txs: [], close: async () => {} };
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const conn = srv.connections++;
    const plan = srv.conns.shift() ?? PLAIN_CONN;
    let gone = false;
    let out: string[] = [];
    let chain = Promise.resolve();
    const write = (s: string): Promise<void> => new Promise((res) => (socket.destroyed ? res() : socket.write(s, () => res())));
    // Replies of one read go out as one write ('together'), one write each, or a byte at a time.
    const flush = (): void => {
      const batch = out;
      out = [];
      if (batch.length === 0) return;
      const pieces = plan.writes === 'together' ? [batch.join('')] : plan.writes === 'each' ? batch : [...batch.join('')];
      chain = chain.then(async () => { for (const p of pieces) await write(p); });
    };
    const say = (code: number, text: string, last = true): void => {
      out.push(`${code}${last ? ' ' : '-'}${plan.enhanced && code >= 200 ? enhanced(code) : ''}${text}\r\n`);
    };
    const hangUp = (): void => {
      gone = true;
      flush();
      chain = chain.then(() => { socket.end(); setTimeout(() => socket.destroy(), 100).unref(); });
    };

    let tx: TxLog | null = null;
    let txPlan = PLAIN_TX;
    let accepted: string[] = [];
    let chunks: Buffer[] = [];
    const reset = (): void => { tx = null; accepted = []; chunks = []; };
    const code = (list: readonly number[], i: number): number => list[i % Math.max(1, list.length)] ?? 250;

    const finish = (body: Buffer): void => {
      const t = tx;
      if (!t) return;
      t.body = body;
      for (const [i, address] of accepted.entries()) {
        const f = txPlan.fault;
        if (f && i >= f.after) {
          if (f.storeUnanswered) t.stored.push(address);
          for (const a of accepted.slice(i)) t.finals.push({ address: a, reply: null });
          t.wentAway = f.how;
          if (f.how === '421') say(421, 'going away');
          reset();
          return hangUp();
        }
        const c = code(txPlan.final, i);
        if (c < 300) t.stored.push(address);
        t.finals.push({ address, reply: c });
        say(c, `final for ${address}`);
      }
      reset();
    };

    const line = (text: string): boolean => {
      if (gone) return false;
      const verb = text.slice(0, 4).toUpperCase();
      if (verb === 'LHLO' || verb === 'EHLO') {
        const caps = ['planned.test', ...(plan.pipelining ? ['PIPELINING'] : []), ...(plan.chunking ? ['CHUNKING'] : []), ...(plan.enhanced ? ['ENHANCEDSTATUSCODES'] : []), '8BITMIME'];
        caps.forEach((c, i) => out.push(`250${i === caps.length - 1 ? ' ' : '-'}${c}\r\n`));
      } else if (verb === 'MAIL') {
        reset();
        txPlan = srv.txs.shift() ?? PLAIN_TX;
        const t: TxLog = { conn, mailReply: null, rcpts: [], finals: [], stored: [], body: null, wentAway: null };
        srv.log.push(t);
        if (txPlan.mail === 'drop') { hangUp(); return false; }
        t.mailReply = txPlan.mail;
        say(txPlan.mail, 'mail');
        if (txPlan.mail === 421) { hangUp(); return false; }
        if (txPlan.mail === 250) tx = t;
      } else if (verb === 'RCPT') {
        if (!tx) { say(503, 'MAIL first'); return false; }
        const t: TxLog = tx;
        const address = /<([^>]*)>/.exec(text)?.[1] ?? '';
        const c = code(txPlan.rcpt, t.rcpts.length);
        t.rcpts.push({ address, reply: c });
        if (c < 300) accepted.push(address);
        say(c, `rcpt ${address}`);
      } else if (verb === 'DATA') {
        if (!tx || accepted.length === 0) { say(503, 'no valid recipients'); reset(); return false; }
        say(354, 'go ahead');
        return true;
      } else if (verb === 'RSET') {
        reset();
        say(250, 'reset');
      } else if (verb === 'QUIT') {
        say(221, 'bye');
        hangUp();
      } else say(500, 'what?');
      return false;
    };
    const chunk = (data: Buffer, last: boolean): void => {
      if (gone) return;
      if (!tx || accepted.length === 0) { say(503, 'no valid recipients'); reset(); return; }
      chunks.push(data);
      if (last) finish(Buffer.concat(chunks));
      else say(250, `${data.byteLength} octets`);
    };
    const input = new LmtpInput(line, (body) => { if (!gone) finish(body); }, plan.chunking ? chunk : undefined);
    socket.on('data', (b: Buffer) => { if (!gone) { input.push(b); flush(); } });
    out.push('220 planned.test LMTP\r\n');
    flush();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  srv.port = (server.address() as net.AddressInfo).port;
  srv.close = () => new Promise((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); });
  return srv;
}
