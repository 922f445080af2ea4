// A scripted LMTP server for the agent's tests: unlike Dovecot it can hold its
// final replies until the test releases them (a slow delivery, K at once) or
// never answer DATA (a delivery stuck before its body). It stores
// complete messages in memory, dot-unstuffed, so a test can count copies.
import net from 'node:net';

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

const TERMINATOR = Buffer.from('\r\n.\r\n');

function unstuff(body: Buffer): Buffer {
  return Buffer.from(body.toString('latin1').replace(/(^|\r\n)\./g, '$1'), 'latin1');
}

export async function startLmtpPeer(mode: PeerMode = 'store'): Promise<LmtpPeer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let line = Buffer.alloc(0);
    let sender = '';
    let rcpts: string[] = [];
    // DATA: chunks so far, and the last bytes seen (starting with the CRLF before the body).
    let data: Buffer[] | null = null;
    let seen = 0;
    let tail = Buffer.from('\r\n');
    const send = (s: string): void => { if (!socket.destroyed) socket.write(s); };

    const finish = (body: Buffer): void => {
      const msg = { sender, recipients: rcpts, body: unstuff(body) };
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

    const command = (text: string): void => {
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
        if (rcpts.length === 0) return send('503 5.5.1 No recipients\r\n');
        if (peer.mode === 'stall') {
          peer.stalled++;
          socket.pause();  // and never resume, never answer: the client waits for its 354
          return;
        }
        send('354 End data with <CR><LF>.<CR><LF>\r\n');
        data = [];
        seen = 0;
        tail = Buffer.from('\r\n');
      } else if (verb === 'RSET') {
        sender = '';
        rcpts = [];
        send('250 2.0.0 Ok\r\n');
      } else if (verb === 'NOOP') send('250 2.0.0 Ok\r\n');
      else if (verb === 'QUIT') {
        send('221 2.0.0 Bye\r\n');
        socket.end();
      } else send('500 5.5.2 Unknown command\r\n');
    };

    const onBytes = (chunk: Buffer): void => {
      if (data) {
        peer.dataBytes += chunk.byteLength;
        // Look for CRLF.CRLF across the chunk boundary without copying the whole body each time.
        const combined = Buffer.concat([tail, chunk]);
        const p = combined.indexOf(TERMINATOR);
        if (p < 0) {
          data.push(chunk);
          seen += chunk.byteLength;
          tail = combined.subarray(Math.max(0, combined.byteLength - 4));
          return;
        }
        const start = seen - tail.byteLength + p;  // the terminator's CR in the real byte stream
        const all = Buffer.concat([...data, chunk]);
        data = null;
        finish(all.subarray(0, Math.max(0, start + 2)));
        const rest = all.subarray(start + 5);
        if (rest.byteLength > 0) onBytes(rest);
        return;
      }
      line = Buffer.concat([line, chunk]);
      let eol: number;
      while (!data && (eol = line.indexOf('\r\n')) >= 0) {
        const text = line.subarray(0, eol).toString('latin1');
        line = line.subarray(eol + 2);
        command(text);
        if (data && line.byteLength > 0) {
          const rest = line;
          line = Buffer.alloc(0);
          onBytes(rest);
        }
      }
    };
    socket.on('data', onBytes);
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
