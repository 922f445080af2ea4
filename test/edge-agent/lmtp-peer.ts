// A scripted LMTP server for the agent's tests: unlike Dovecot it can hold its
// final replies until the test releases them (a slow delivery, K at once) or
// never answer DATA (a delivery stuck before its body). It stores
// complete messages in memory, dot-unstuffed, so a test can count copies.
import net from 'node:net';
import { LmtpInput } from '../helpers/lmtp-input.ts';

export type PeerMode = 'store' | 'hold' | 'stall';

export interface HeldMessage {
  sender: string;
  recipients: string[];
  body: Buffer;
  /** Stores the message and sends one 250 per recipient. */
  release(): void;
}

export interface LmtpPeer {
  port: number;
  url: string;
  /**
   * 'store': answer 250 at once; 'hold': keep the final replies until release();
   * 'stall': never answer DATA and read nothing more on that connection.
   */
  mode: PeerMode;
  /** Complete messages answered 250, in order. */
  stored: Buffer[];
  /** Messages whose final dot arrived and whose replies are held. */
  held: HeldMessage[];
  /** Connections stalled at DATA. */
  stalled: number;
  /** Body bytes received so far (all transactions). */
  dataBytes: number;
  /** LHLO commands seen (deliveries and probes). */
  hellos: number;
  /** The final reply for one recipient, CRLF-terminated lines (default: one 250 line). */
  finalReply: (recipient: string) => string;
  /** Drops every connection, e.g. to make the target vanish. */
  close(): Promise<void>;
}

export async function startLmtpPeer(mode: PeerMode = 'store'): Promise<LmtpPeer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let sender = '';
    let rcpts: string[] = [];
    const send = (s: string): void => { if (!socket.destroyed) socket.write(s); };

    const finish = (body: Buffer): void => {
      const msg = { sender, recipients: rcpts, body };
      const reply = (): void => {
        peer.stored.push(msg.body);
        for (const r of msg.recipients) send(peer.finalReply(r));
      };
      sender = '';
      rcpts = [];
      if (peer.mode === 'hold') {
        peer.held.push({ ...msg, release: () => { peer.held.splice(peer.held.findIndex((h) => h.body === msg.body), 1); reply(); } });
      } else reply();
    };

    /** True when the body follows (354 sent). */
    const command = (text: string): boolean => {
      const verb = text.slice(0, 4).toUpperCase();
      if (verb === 'LHLO') {
        peer.hellos++;
        send('250-peer.test\r\n250 8BITMIME\r\n');
      } else if (verb === 'MAIL') {
        sender = /<([^>]*)>/.exec(text)?.[1] ?? '';
        send('250 2.1.0 Ok\r\n');
      } else if (verb === 'RCPT') {
        rcpts.push(/<([^>]*)>/.exec(text)?.[1] ?? '');
        send('250 2.1.5 Ok\r\n');
      } else if (verb === 'DATA') {
        if (rcpts.length === 0) {
          send('503 5.5.1 No recipients\r\n');
          return false;
        }
        if (peer.mode === 'stall') {
          peer.stalled++;
          socket.pause();  // and never resume, never answer: the client waits for its 354
          return false;
        }
        send('354 End data with <CR><LF>.<CR><LF>\r\n');
        return true;
      } else if (verb === 'RSET') {
        sender = '';
        rcpts = [];
        send('250 2.0.0 Ok\r\n');
      } else if (verb === 'NOOP') send('250 2.0.0 Ok\r\n');
      else if (verb === 'QUIT') {
        send('221 2.0.0 Bye\r\n');
        socket.end();
      } else send('500 5.5.2 Unknown command\r\n');
      return false;
    };

    const input = new LmtpInput(command, finish);
    socket.on('data', (chunk: Buffer) => {
      const before = input.dataBytes;
      input.push(chunk);
      peer.dataBytes += input.dataBytes - before;
    });
    send('220 peer.test LMTP ready\r\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const peer: LmtpPeer = {
    port,
    url: `lmtp://127.0.0.1:${port}`,
    mode,
    stored: [],
    held: [],
    stalled: 0,
    dataBytes: 0,
    hellos: 0,
    finalReply: (r) => `250 2.0.0 <${r}> Saved\r\n`,
    close: () => new Promise((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    }),
  };
  return peer;
}
